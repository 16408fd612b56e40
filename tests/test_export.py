"""hfkit export: ONNX files that compute what PyTorch computes, predictors from an export folder that
answer as the result folder does, int8 with its sizes/agreement/accuracy, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_image, tiny_image_overrides, write_image_folder

from hfkit.cli import main
from hfkit.export import INT8_FILE, ExportMismatch, ImageExport, OnnxImageClassifier, export
from hfkit.results import ONNX_FILE, read_result


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A real (one-epoch) hymenoptera result folder: recipe, examples/ and its data are here."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("export-images")
    data = write_image_folder(root / "images", {"train": 4, "val": 3})
    out = root / "run"
    finetune(load_recipe("hymenoptera", tiny_image_overrides(data) + ["train.epochs=1"], output_dir=str(out)))
    return out


@pytest.fixture(scope="module")
def image_export(image_run) -> tuple[Path, object]:
    return image_run / "onnx", export(str(image_run), quantize="int8")


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    """An untrained resnet18_cifar saved as an in-memory run saves it: crop_mode=squash in its config."""
    from hfkit.data.transforms import serve_like_tensor_pipeline
    from hfkit.models import create_image_model, save_image_model
    from hfkit.recipes import ModelArgs

    model = create_image_model(ModelArgs(name="resnet18_cifar", pretrained=False), ["red", "green", "blue"])
    serve_like_tensor_pipeline(model)
    folder = tmp_path_factory.mktemp("cifar") / "run"
    save_image_model(model, folder)
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pictures")
    paths = []
    for i, (color, size) in enumerate([((230, 200, 40), (40, 32)), ((60, 40, 200), (64, 90)),
                                       ((120, 120, 120), (300, 200))]):
        make_image(color, size=size, seed=i).save(root / f"p{i}.jpg")
        paths.append(str(root / f"p{i}.jpg"))
    return paths


def _same_ranking(ours, theirs, tol=1e-4) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert [label for label, _ in a] == [label for label, _ in b]
        assert all(abs(p - q) < tol for (_, p), (_, q) in zip(a, b)), (a, b)


def test_image_export_matches_pytorch_and_is_a_model_folder(image_run, image_export, pictures):
    from hfkit.inference import ImageClassifier

    out, report = image_export
    fp32 = next(c for c in report.checks if c.model == "onnxruntime fp32")
    assert fp32.file == ONNX_FILE and fp32.max_abs_diff <= report.tolerance and fp32.top1_agreement == 1.0
    assert report.parity_inputs >= 5 and report.tolerance >= 1e-3
    assert json.loads((out / "export.json").read_text())["checks"][1]["max_abs_diff"] == fp32.max_abs_diff
    found = read_result(str(out))
    assert found.onnx and found.task.name == "image-classification" and found.labels == ["ants", "bees"]
    assert not read_result(str(image_run)).onnx
    assert not (out / "model.unchecked.onnx").exists() and not (out / "model.safetensors").exists()
    # the export folder alone serves (dynamic batch: 3 images; the trace used 2)
    _same_ranking(OnnxImageClassifier(str(out)).predict(pictures, top_k=2),
                  ImageClassifier(str(image_run), device="cpu").predict(pictures, top_k=2))


def test_int8_image_export_reports_sizes_agreement_and_accuracies(image_export, pictures):
    out, report = image_export
    by_model = {c.model: c for c in report.checks}
    assert list(by_model) == ["PyTorch fp32", "onnxruntime fp32", "onnxruntime int8"]
    int8, fp32 = by_model["onnxruntime int8"], by_model["onnxruntime fp32"]
    assert int8.file == INT8_FILE and (out / INT8_FILE).stat().st_size == int8.size
    assert int8.size < fp32.size / 3  # int8 weights: a quarter of fp32, plus the graph
    assert 0.0 <= int8.top1_agreement <= 1.0 and int8.max_abs_diff > 0
    # accuracies on the recipe's own eval split (6 images): ONNX fp32 decides as PyTorch does
    assert report.eval_samples == 6
    assert fp32.accuracy == by_model["PyTorch fp32"].accuracy and int8.accuracy is not None
    assert "calibrated on 6 eval images" in " ".join(report.notes)
    ranked = OnnxImageClassifier(str(out), file=INT8_FILE).predict(pictures, top_k=1)
    assert len(ranked) == 3 and all(r[0][0] in ("ants", "bees") for r in ranked)
    table = report.table()
    assert "onnxruntime int8  model.int8.onnx" in table and "accuracy on 6 eval examples" in table
    # every stage timed, in order, and the total on the table's last line
    assert list(report.seconds) == ["export", "parity", "eval data", "int8", "accuracy"]
    assert all(v >= 0 for v in report.seconds.values()) and report.seconds["export"] > 0
    assert table.splitlines()[-1] == (f"took {sum(report.seconds.values()):.1f} s: " + ", ".join(
        f"{k} {v:.1f}" for k, v in report.seconds.items()))
    assert json.loads((out / "export.json").read_text())["seconds"] == report.seconds


def test_the_int8_file_is_a_model_of_its_own_wherever_a_model_is_taken(image_export, image_run, capsys):
    """``runs/x/onnx/model.int8.onnx`` for --model: predict, evaluate and serve run that file."""
    from fastapi.testclient import TestClient

    from hfkit.cli import main
    from hfkit.evaluation import evaluate_classifier
    from hfkit.serve import create_app

    out, report = image_export
    int8 = out / INT8_FILE
    val = Path(read_result(str(image_run)).section("data")["path"]) / "val"
    images = sorted(val.rglob("*.jpg"))
    expected = OnnxImageClassifier(str(out), file=INT8_FILE).predict(images, top_k=2)
    assert expected != OnnxImageClassifier(str(out)).predict(images, top_k=2)  # int8 answers otherwise
    assert main(["predict", "--model", str(int8), *map(str, images), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed == "".join(f"{path}\n" + "".join(f"  {p:7.2%}  {label}\n" for label, p in ranked)
                              for path, ranked in zip(images, expected))
    scored = evaluate_classifier(str(int8), str(val))
    assert scored["output_dir"] == str(out / "eval-val-model.int8")  # model.onnx's results stay apart
    assert scored["eval_accuracy"] == report.checks[2].accuracy  # what the export measured for int8
    with TestClient(create_app(str(int8))) as client:
        reply = client.post("/predict?top_k=2", files=[("image", (images[0].name, images[0].read_bytes()))])
    assert reply.status_code == 200, reply.text
    assert [p["label"] for p in reply.json()["predictions"][0]] == [label for label, _ in expected[0]]
    assert [p["score"] for p in reply.json()["predictions"][0]] == pytest.approx([p for _, p in expected[0]],
                                                                                 abs=1e-5)
    # the demo too: the int8 file's answer for a picture uploaded to it
    from gradio.utils import get_upload_folder

    from hfkit.demo import image_demo

    classify = next(f.fn for f in image_demo(str(int8)).fns.values() if f.api_name == "classify")
    uploaded = Path(get_upload_folder()) / "hfkit-int8-test" / images[0].name
    uploaded.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(images[0], uploaded)
    assert classify({"path": str(uploaded)}, 2) == pytest.approx(dict(expected[0]), abs=1e-6)
    stray = image_run / "stray.onnx"
    stray.write_bytes(b"not a model")
    with pytest.raises(FileNotFoundError, match="outside an export folder"):
        read_result(str(stray))


def test_squash_marker_travels_and_cifar_model_exports(cifar_folder, tmp_path, pictures):
    from hfkit.inference import ImageClassifier

    report = export(str(cifar_folder), out_dir=str(tmp_path / "onnx"))
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert config["architecture"] == "resnet18_cifar" and config["label_names"] == ["red", "green", "blue"]
    assert config["pretrained_cfg"]["crop_mode"] == "squash" and config["pretrained_cfg"]["crop_pct"] == 1.0
    assert report.checks[1].max_abs_diff <= report.tolerance
    onnx_classifier = OnnxImageClassifier(str(tmp_path / "onnx"))
    torch_classifier = ImageClassifier(str(cifar_folder), device="cpu")
    assert onnx_classifier.min_size == torch_classifier.min_size == 64
    _same_ranking(onnx_classifier.predict(pictures, top_k=3), torch_classifier.predict(pictures, top_k=3))
    assert "note: no accuracy" not in report.table()  # fp32 without eval data: no accuracy asked for


def test_text_export_with_int8_and_eval_data(tiny_bert_dir, tmp_path):
    from conftest import toy_reviews

    from hfkit.export import OnnxTextClassifier
    from hfkit.inference import TextClassifier

    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": ["neg", "pos"][y]}) + "\n"
                            for t, y in toy_reviews(40)))
    out = tmp_path / "onnx"
    report = export(str(tiny_bert_dir), out_dir=str(out), quantize="int8", eval_data=str(data))
    torch_check, fp32, int8 = report.checks
    assert fp32.max_abs_diff <= 1e-3 and fp32.top1_agreement == 1.0  # logits of a random BERT: |x| < 1
    assert report.eval_samples == 8 and fp32.accuracy == torch_check.accuracy and int8.accuracy is not None
    assert int8.size < fp32.size and 0.0 <= int8.top1_agreement <= 1.0
    assert (out / "tokenizer.json").is_file() and read_result(str(out)).task.name == "text-classification"
    texts = ["a wonderful film", "the plot was boring and the actors were really terrible and very poor"]
    _same_ranking(OnnxTextClassifier(str(out)).predict(texts),
                  TextClassifier(str(tiny_bert_dir), "cpu").predict(texts))
    # the int8 file by its path: the folder's tokenizer and labels, the int8 weights
    by_path = read_result(str(out / INT8_FILE)).predictor()(str(out / INT8_FILE))
    assert by_path.predict(texts) == OnnxTextClassifier(str(out), file=INT8_FILE).predict(texts)
    assert by_path.predict(texts) != OnnxTextClassifier(str(out)).predict(texts)


def test_qa_export_answers_as_the_pytorch_model(chinese_qa_safetensors, tmp_path, capsys):
    from conftest import toy_chinese_qa

    from hfkit.inference import answer

    out = tmp_path / "onnx"
    report = export(str(chinese_qa_safetensors), out_dir=str(out))
    assert report.checks[1].max_abs_diff <= report.tolerance and report.task == "question-answering"
    example = toy_chinese_qa(3, seed=5)["data"][0]["paragraphs"]
    questions = [p["qas"][0]["question"] for p in example]
    contexts = [p["context"] for p in example]
    ours = answer(questions, contexts, model=str(out), top_k=2, max_length=48, doc_stride=16)
    theirs = answer(questions, contexts, model=str(chinese_qa_safetensors), top_k=2, max_length=48,
                    doc_stride=16)
    for a, b in zip(ours, theirs, strict=True):
        assert [(x["answer"], x["start"], x["end"]) for x in a] == [
            (x["answer"], x["start"], x["end"]) for x in b]
        assert all(abs(x["score"] - y["score"]) < 1e-4 for x, y in zip(a, b))
    assert main(["qa", "--model", str(out), "--question", questions[0], "--context", contexts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == theirs[0][0]["answer"]


def test_causal_lm_export_generates_what_the_folder_generates(tiny_gpt2_dir, tmp_path, capsys):
    """transformers' generate drives the export: greedy and seeded sampling give the PyTorch
    folder's tokens, through the command too."""
    from hfkit.inference import _load_causal_lm, generate

    cached = {device: _load_causal_lm(str(tiny_gpt2_dir), device) for device in (None, "cpu")}  # generate's
    out = tmp_path / "onnx"
    report = export(str(tiny_gpt2_dir), out_dir=str(out))
    # the export worked on a copy of its own: eager attention and the pad token stayed there
    for device, (model, tokenizer) in cached.items():
        assert _load_causal_lm(str(tiny_gpt2_dir), device)[0] is model
        assert (model.config._attn_implementation, tokenizer.pad_token) == ("sdpa", None)
    assert report.checks[1].max_abs_diff <= report.tolerance and report.checks[1].top1_agreement == 1.0
    assert read_result(str(out)).task.name == "causal-lm"
    for options in ({"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 3},
                    {"temperature": 1.0, "repetition_penalty": 1.3, "seed": 0}):
        ours = generate(str(out), "the quick brown", max_new_tokens=12, **options)
        assert ours == generate(str(tiny_gpt2_dir), "the quick brown", max_new_tokens=12, **options)
        assert len(ours) > len("the quick brown")
    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--prompt", "the quick", "--max-new-tokens", "6",
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == generate(str(tiny_gpt2_dir), "the quick", max_new_tokens=6, seed=1).strip()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_model_onnx_is_a_clear_error(image_export, tmp_path, pictures, damage, capsys):
    out, _ = image_export
    broken = tmp_path / "onnx"
    shutil.copytree(out, broken)
    data = (broken / ONNX_FILE).read_bytes()
    (broken / ONNX_FILE).write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not a model" * 50)
    with pytest.raises(ValueError, match="is not a readable ONNX model .*corrupt or truncated"):
        OnnxImageClassifier(str(broken))
    assert main(["predict", "--model", str(broken), pictures[0]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfkit predict: error: ") and "hfkit export RUN_DIR --format onnx" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_a_mismatching_export_fails_with_the_numbers_and_writes_no_model(cifar_folder, tmp_path, monkeypatch):
    real = ImageExport.reference
    monkeypatch.setattr(ImageExport, "reference", lambda self, feeds: [r + 0.5 for r in real(self, feeds)])
    out = tmp_path / "onnx"
    numbers = r"max \|logit difference\| 0\.5 on \d+ inputs .* top-1 agreement"
    with pytest.raises(ExportMismatch, match=numbers):
        export(str(cifar_folder), out_dir=str(out))
    assert not (out / ONNX_FILE).exists() and (out / "model.unchecked.onnx").is_file()
    assert not read_result(str(out)).onnx  # the folder is not taken for an export


def test_cli_export_then_predict_from_the_export_prints_the_same(cifar_folder, tmp_path, pictures, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(cifar_folder), "--format", "onnx", "--out", str(out)]) == 0
    printed, said = capsys.readouterr()
    # each stage is announced as it starts, on stderr; no int8, no eval data: two stages
    inputs = json.loads((out / "export.json").read_text())["parity_inputs"]
    assert [line for line in said.splitlines() if line.startswith("hfkit export:")] == [
        f"hfkit export: exporting {cifar_folder} to ONNX (torch.onnx, dynamo) ...",
        f"hfkit export: checking onnxruntime against PyTorch on {inputs} inputs ..."]
    assert f"{cifar_folder} -> {out} (image-classification)" in printed
    assert "onnxruntime fp32  model.onnx" in printed
    assert main(["predict", "--model", str(out), "--top-k", "3", *pictures]) == 0
    from_export = capsys.readouterr().out
    assert main(["predict", "--model", str(cifar_folder), "--top-k", "3", *pictures]) == 0
    assert from_export == capsys.readouterr().out and from_export.count("%") == 9
    assert main(["show", str(out)]) == 0
    assert "image-classification (timm resnet18_cifar, ONNX export)" in capsys.readouterr().out
    assert main(["export", str(out)]) == 2
    assert "is already an ONNX export" in capsys.readouterr().err


def test_an_export_into_a_model_folder_is_refused_and_leaves_it_as_it_was(cifar_folder, image_run, tmp_path,
                                                                          capsys):
    def contents(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    run = tmp_path / "run"
    shutil.copytree(cifar_folder, run)
    before = contents(run)
    # the folder itself (its config.json would be rewritten and hfkit would serve it with onnxruntime)
    assert main(["export", str(run), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"'{run}' is the folder being exported and holds config.json, model.safetensors" in err
    assert f"such as {run / 'onnx'}" in err
    # another run's folder, with its recipe and results
    with pytest.raises(ValueError, match="is a folder that is not an earlier export and holds all_results"):
        export(str(run), out_dir=str(image_run))
    assert contents(run) == before and not read_result(str(run)).onnx and not (image_run / ONNX_FILE).exists()
    # another tool's ONNX folder is no earlier export of hfkit's; one hfkit's export left cut short is
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / ONNX_FILE).write_bytes(b"their model")
    with pytest.raises(ValueError, match="is a folder that is not an earlier export and holds model.onnx"):
        export(str(run), out_dir=str(tmp_path / "theirs"))
    assert (tmp_path / "theirs" / ONNX_FILE).read_bytes() == b"their model"
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.unchecked.onnx.data").write_bytes(b"half of the weights")
    assert export(str(run), out_dir=str(tmp_path / "cut")).checks[1].top1_agreement == 1.0
    # an empty folder, then the same export folder again: both fine
    (tmp_path / "empty").mkdir()
    for _ in range(2):
        assert export(str(run), out_dir=str(tmp_path / "empty")).checks[1].top1_agreement == 1.0
    assert read_result(str(tmp_path / "empty")).onnx

"""``hfkit evaluate`` of classifiers: the numbers training reports, on any labelled data set."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import PIL.ImageOps
import pytest
from conftest import (
    REPETITIVE,
    make_image,
    tiny_image_overrides,
    toy_reviews,
    write_image_folder,
    write_image_run,
    write_review_parquet,
)

from hfkit.cli import main
from hfkit.evaluation import evaluate_causal_lm, evaluate_classifier


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return write_image_run(tmp_path_factory.mktemp("evaluate-images"))


def _trained(run: Path) -> tuple[dict, list[int]]:
    return (json.loads((run / "all_results.json").read_text()),
            json.loads((run / "eval_predictions.json").read_text()))


def test_an_image_run_scored_on_its_own_eval_split_gives_what_training_reported(image_run, tmp_path):
    trained, predictions = _trained(image_run)
    data = image_run.parent / "images"  # what write_image_run trained and evaluated on
    results = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "eval"))
    assert results["split"] == "validation" and results["examples"] == len(predictions) == 8
    assert results["eval_accuracy"] == trained["eval_accuracy"]
    assert math.isclose(results["eval_loss"], trained["eval_loss"], rel_tol=1e-4)
    assert results["eval_f1"] == trained["eval_f1"]
    rows = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert [["ants", "bees"].index(r["prediction"]) for r in rows] == predictions
    assert rows[0]["input"].endswith(".jpg") and 0.5 <= rows[0]["score"] <= 1
    assert list(results["eval_per_class_accuracy"]) == ["ants", "bees"]
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["eval_accuracy"] == \
        results["eval_accuracy"]


def test_a_run_evaluated_with_mirrored_images_is_scored_and_served_so(tmp_path):
    from hfkit.finetune import finetune
    from hfkit.inference import ImageClassifier
    from hfkit.recipes import load_recipe

    data = write_image_folder(tmp_path / "images", {"train": 8, "val": 6}, seed=11)
    overrides = [*tiny_image_overrides(data), "train.epochs=1", "eval.num_preview_images=0",
                 "eval.tta_hflip=true"]
    finetune(load_recipe("hymenoptera", overrides, output_dir=str(tmp_path / "run")))
    trained, predictions = _trained(tmp_path / "run")
    results = evaluate_classifier(str(tmp_path / "run"), str(data), output_dir=str(tmp_path / "eval"))
    assert math.isclose(results["eval_loss"], trained["eval_loss"], rel_tol=1e-5)
    # predict answers with the mean of each image's logits and its mirror's, as training scored it
    classifier = ImageClassifier(str(tmp_path / "run"), device="cpu")
    image = sorted((data / "val" / "ants").iterdir())[0]
    both = classifier.predict([image], top_k=2)[0]
    classifier.tta_hflip = False
    plain = classifier.predict([image], top_k=2)[0]
    mirrored = classifier.predict([PIL.ImageOps.mirror(classifier.load(image))], top_k=2)[0]
    assert classifier.labels == ["ants", "bees"]
    logit_gap = {name: math.log(dict(r)["ants"] / dict(r)["bees"]) for name, r in
                 (("both", both), ("plain", plain), ("mirrored", mirrored))}
    assert math.isclose(logit_gap["both"], (logit_gap["plain"] + logit_gap["mirrored"]) / 2, rel_tol=1e-3)
    assert not math.isclose(logit_gap["plain"], logit_gap["mirrored"], rel_tol=1e-3)


def test_bf16_scores_under_autocast_as_training_evaluates_a_bf16_run(image_run, tmp_path, capsys):
    trained, _ = _trained(image_run)
    data = str(image_run.parent / "images")
    fp32 = evaluate_classifier(str(image_run), data, output_dir=str(tmp_path / "a"))
    bf16 = evaluate_classifier(str(image_run), data, output_dir=str(tmp_path / "b"), precision="bf16")
    assert bf16["precision"] == "bf16" and bf16["eval_loss"] != fp32["eval_loss"]  # autocast ran
    assert math.isclose(bf16["eval_loss"], trained["eval_loss"], rel_tol=2e-2)
    assert main(["evaluate", "--model", str(image_run), "--data", data, "--precision", "bf16",
                 "--output-dir", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "eval_results.json").read_text())["eval_loss"] == bf16["eval_loss"]


def test_new_images_are_scored_and_the_worst_mistakes_drawn(image_run, tmp_path):
    # a folder of class folders (no split folders): all of it is scored, an unreadable file is named
    data = write_image_folder(tmp_path / "new", {"train": 5}, seed=500) / "train"
    (data / "ants" / "broken.jpg").write_bytes(b"not an image")
    right = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "eval"))
    assert right["split"] == "train" and right["examples"] == 10
    assert len(right["skipped_files"]) == 1 and "broken.jpg" in right["skipped_files"][0]
    # the same images with ants filed as bees and bees as ants: each prediction that was right is wrong
    (data / "ants").rename(data / "was-ants")
    (data / "bees").rename(data / "ants")
    (data / "was-ants").rename(data / "bees")
    swapped = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "swapped"))
    assert math.isclose(right["eval_accuracy"] + swapped["eval_accuracy"], 1.0)
    assert swapped["mistakes"] == 10 - right["mistakes"] == round(10 * right["eval_accuracy"])
    assert (tmp_path / "swapped" / "mistakes.png").is_file() == (swapped["mistakes"] > 0)
    assert (tmp_path / "eval" / "mistakes.png").is_file() == (right["mistakes"] > 0)


def test_images_of_one_class_are_scored_as_that_class(image_run, tmp_path):
    data = write_image_folder(tmp_path / "new", {"train": 6, "val": 5}, seed=700)
    both = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "both"))
    assert both["split"] == "validation" and both["examples"] == 10
    for split in ("train", "val"):
        shutil.rmtree(data / split / "bees")
    # new/val/ants: the val split, all ants, as the ants of both classes were scored
    ants = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "ants"))
    assert ants["split"] == "validation" and ants["examples"] == 5
    assert ants["eval_accuracy"] == both["eval_per_class_accuracy"]["ants"]
    assert ants["eval_per_class_accuracy"] == {"ants": ants["eval_accuracy"], "bees": None}
    assert ants["eval_f1"] is None  # the F1 of bees, on no bees, would read as 0
    # new/ants (no split folders): the one folder is the class
    flat = data / "val"
    flat_scores = evaluate_classifier(str(image_run), str(flat), output_dir=str(tmp_path / "f"))
    assert flat_scores["eval_accuracy"] == ants["eval_accuracy"]
    assert evaluate_classifier(str(image_run), str(flat), output_dir=str(tmp_path / "g"),
                               max_samples=3)["examples"] == 3


def test_images_in_the_hubs_parquet_layout_are_a_data_set_not_a_class(image_run, tmp_path):
    """data/plain_text/test-*.parquet (CIFAR-10's layout): one folder, but of data files, not of images."""
    import datasets

    data = write_image_folder(tmp_path / "new", {"train": 2, "val": 4}, seed=900)
    from_folder = evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "a"))
    files = sorted((data / "val").rglob("*.jpg"))
    features = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=["ants", "bees"]))
    table = datasets.Dataset.from_dict({"image": [str(f) for f in files],
                                        "label": [["ants", "bees"].index(f.parent.name) for f in files]},
                                       features=features)
    (tmp_path / "hub" / "plain_text").mkdir(parents=True)
    table.to_parquet(str(tmp_path / "hub" / "plain_text" / "test-00000-of-00001.parquet"))
    from_parquet = evaluate_classifier(str(image_run), str(tmp_path / "hub"), output_dir=str(tmp_path / "b"))
    assert from_parquet["split"] == "test" and from_parquet["examples"] == 8
    assert from_parquet["eval_accuracy"] == from_folder["eval_accuracy"]
    assert math.isclose(from_parquet["eval_loss"], from_folder["eval_loss"], rel_tol=1e-6)


def test_classes_are_matched_by_name_and_unknown_ones_refused(image_run, tmp_path):
    data = write_image_folder(tmp_path / "data", {"train": 2, "val": 2})
    (data / "train" / "wasps").mkdir()
    (data / "val" / "wasps").mkdir()
    for split in ("train", "val"):
        make_image((9, 9, 9)).save(data / split / "wasps" / "w.jpg")
    with pytest.raises(ValueError, match="classes that .* does not know: wasps .*its classes: ants, bees"):
        evaluate_classifier(str(image_run), str(data), output_dir=str(tmp_path / "eval"))


def test_a_text_run_scored_on_its_own_eval_split_gives_what_training_reported(tiny_bert_dir, tmp_path):
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_review_parquet(tmp_path / "data", 96, 24)
    run = tmp_path / "run"
    finetune(load_recipe("imdb", [f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=32",
                                  "train.epochs=8", "train.batch_size=16", "train.warmup_ratio=0",
                                  "train.mixed_precision=no", "train.lr=3e-3"], output_dir=str(run)))
    trained, predictions = _trained(run)
    assert 0.5 < trained["eval_accuracy"] < 1  # right and wrong answers, both to be equal
    argv = ["evaluate", "--model", str(run), "--data", str(data), "--output-dir", str(tmp_path / "e")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "e" / "eval_results.json").read_text())
    assert results["split"] == "test" and results["examples"] == 24
    assert results["eval_accuracy"] == trained["eval_accuracy"]
    assert math.isclose(results["eval_loss"], trained["eval_loss"], rel_tol=1e-4)
    rows = json.loads((tmp_path / "e" / "predictions.json").read_text())
    assert [["neg", "pos"].index(r["prediction"]) for r in rows] == predictions
    assert not (tmp_path / "e" / "mistakes.png").exists()  # texts: predictions.json says it


def test_a_run_on_data_without_an_eval_split_is_scored_on_the_part_it_held_out(tiny_bert_dir, tmp_path):
    """The run's own data is read with its own settings: its columns, its held-out fraction and seed."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    rows = toy_reviews(120, seed=3)
    data = tmp_path / "reviews.csv"
    data.write_text("review,sentiment\n" + "".join(f"{t},{['neg', 'pos'][y]}\n" for t, y in rows))
    run = tmp_path / "run"
    finetune(load_recipe("imdb", [f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=32",
                                  "data.text_column=review", "data.label_column=sentiment",
                                  "data.val_fraction=0.25", "train.seed=7", "train.epochs=6",
                                  "train.batch_size=16", "train.warmup_ratio=0", "train.mixed_precision=no",
                                  "train.lr=3e-3"], output_dir=str(run)))
    trained, predictions = _trained(run)
    results = evaluate_classifier(str(run), str(data), output_dir=str(tmp_path / "e"))
    assert results["split"] == "train (the part training held out)" and results["examples"] == 30
    assert results["eval_accuracy"] == trained["eval_accuracy"] and results["classes_matched"] == "by name"
    assert math.isclose(results["eval_loss"], trained["eval_loss"], rel_tol=1e-4)
    rows_scored = json.loads((tmp_path / "e" / "predictions.json").read_text())
    assert [["neg", "pos"].index(r["prediction"]) for r in rows_scored] == predictions

    # the same reviews labelled 0/1 elsewhere: matched to neg/pos by index
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    named = tmp_path / "named.csv"
    named.write_text("text,label\n" + "".join(f"{t},{['neg', 'pos'][y]}\n" for t, y in rows))
    by_name = evaluate_classifier(str(run), str(named), output_dir=str(tmp_path / "n"))
    by_index = evaluate_classifier(str(run), str(numbered), output_dir=str(tmp_path / "i"))
    assert by_name["examples"] == by_index["examples"] == 120 and by_index["classes_matched"] == "by index"
    assert by_index["eval_accuracy"] == by_name["eval_accuracy"] and by_index["eval_f1"] == by_name["eval_f1"]
    # a model whose classes are LABEL_0, LABEL_1 (a Hub default) on named data: by index too
    hub = tmp_path / "hub"
    shutil.copytree(run, hub)
    config = json.loads((hub / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "LABEL_0", "1": "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    (hub / "config.json").write_text(json.dumps(config))
    (hub / "recipe.yaml").unlink()
    unnamed = evaluate_classifier(str(hub), str(named), output_dir=str(tmp_path / "h"))
    assert unnamed["classes_matched"] == "by index" and unnamed["eval_accuracy"] == by_name["eval_accuracy"]


def test_options_of_another_task_are_refused(image_run, tiny_gpt2_dir, capsys):
    assert main(["evaluate", "--model", str(image_run), "--data", "x", "--doc-stride", "64"]) == 2
    assert "--doc-stride: not an option for image-classification models" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(image_run), "--data", "x", "--block-size", "64"]) == 2
    assert "--block-size: not an option for image-classification" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_gpt2_dir), "--data", "x", "--scorer", "squad"]) == 2
    assert "--scorer: not an option for causal-lm models" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lm_run(tiny_gpt2_dir, tmp_path_factory) -> Path:
    """A tiny GPT-2 trained on the repetitive sentence, with a validation file of it and of other words."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("evaluate-lm")
    (root / "texts").mkdir()
    (root / "texts" / "train.txt").write_text("\n".join([REPETITIVE] * 30))
    story = "once upon a time there was a story . " * 3
    (root / "texts" / "validation.txt").write_text("\n".join([REPETITIVE] * 3 + [story] * 3))
    overrides = [f"data.path={root / 'texts'}", "data.config=null", f"model.name={tiny_gpt2_dir}",
                 "data.block_size=16", "train.epochs=4", "train.batch_size=8", "train.lr=3e-3",
                 "train.mixed_precision=no"]
    finetune(load_recipe("gpt2", overrides, output_dir=str(root / "run")))
    return root / "run"


def test_a_language_model_scored_on_its_own_eval_split_gives_what_training_reported(lm_run, tmp_path):
    trained = json.loads((lm_run / "all_results.json").read_text())
    argv = ["evaluate", "--model", str(lm_run), "--data", str(lm_run.parent / "texts"),
            "--output-dir", str(tmp_path / "e"), "--batch-size", "3"]  # batches unlike training's
    assert main(argv) == 0
    results = json.loads((tmp_path / "e" / "eval_results.json").read_text())
    assert results["split"] == "validation" and results["block_size"] == 16 == trained["block_size"]
    assert results["blocks"] == trained["eval_samples"]
    assert math.isclose(results["eval_loss"], trained["eval_loss"], rel_tol=1e-5)
    assert math.isclose(results["eval_perplexity"], trained["eval_perplexity"], rel_tol=1e-5)
    assert results["tokens_scored"] == results["blocks"] * 15  # each block predicts all but its first token
    rows = json.loads((tmp_path / "e" / "blocks.json").read_text())
    assert len(rows) == results["blocks"] and sorted(r["block"] for r in rows) == list(range(len(rows)))
    losses = [r["loss"] for r in rows]
    assert losses == sorted(losses, reverse=True) and losses[0] > losses[-1]
    assert math.isclose(rows[0]["perplexity"], math.exp(losses[0]), rel_tol=1e-3)
    # the hardest block holds the story the model never saw, the easiest only its training sentence
    story_words = ("once", "upon", "there", "story")
    assert any(w in rows[0]["text"] for w in story_words)
    assert not any(w in rows[-1]["text"] for w in story_words)
    # by default beside the run, one folder per split asked for: another split keeps these results
    default = evaluate_causal_lm(str(lm_run), str(lm_run.parent / "texts"), split="train")
    assert default["output_dir"] == str(lm_run / "eval-texts-train") and default["split"] == "train"
    written = json.loads((lm_run / "eval-texts-train" / "eval_results.json").read_text())
    assert written["blocks"] == default["blocks"] > results["blocks"]


def test_a_language_model_on_new_text_with_its_own_block_size(lm_run, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text("\n".join([REPETITIVE] * 6))
    seen = evaluate_causal_lm(str(lm_run), str(new), output_dir=str(tmp_path / "a"))
    short = evaluate_causal_lm(str(lm_run), str(new), output_dir=str(tmp_path / "b"), block_size=8)
    assert seen["split"] == "train" and seen["block_size"] == 16 and short["block_size"] == 8
    assert short["blocks"] in (2 * seen["blocks"], 2 * seen["blocks"] + 1)
    # shorter blocks: less context per predicted token, and one more first token unpredicted per block
    assert short["tokens_scored"] == short["blocks"] * 7
    story = tmp_path / "story.txt"
    story.write_text("\n".join(["once upon a time there was a story . " * 4] * 6))
    unseen = evaluate_causal_lm(str(lm_run), str(story), output_dir=str(tmp_path / "d"))
    assert seen["eval_perplexity"] < unseen["eval_perplexity"]  # the sentence it was trained on
    half = evaluate_causal_lm(str(lm_run), str(new), output_dir=str(tmp_path / "c"), max_samples=3)
    assert half["texts"] == 3 and half["blocks"] < seen["blocks"]


def test_a_language_model_export_is_scored_as_its_folder(lm_run, tmp_path):
    from hfkit.export import export

    export(str(lm_run), out_dir=str(tmp_path / "onnx"))
    data = str(lm_run.parent / "texts")
    folder = evaluate_causal_lm(str(lm_run), data, output_dir=str(tmp_path / "a"))
    exported = evaluate_causal_lm(str(tmp_path / "onnx"), data, output_dir=str(tmp_path / "b"), block_size=16)
    assert exported["blocks"] == folder["blocks"]
    assert math.isclose(exported["eval_loss"], folder["eval_loss"], rel_tol=1e-4)

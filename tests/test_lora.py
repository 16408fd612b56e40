"""train.strategy=lora on tiny transformers models: what trains, what is saved, what loads it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from conftest import (
    REPETITIVE,
    tiny_image_overrides,
    write_chinese_qa_model,
    write_image_folder,
    write_review_parquet,
    write_toy_cmrc,
)
from safetensors.torch import load_file

from hfkit import finetune as ft
from hfkit.lora import trainable_parameters
from hfkit.recipes import RecipeError, load_recipe
from hfkit.training import find_checkpoint

FAST = ["train.mixed_precision=no", "train.epochs=1", "train.batch_size=8", "train.lr=1e-2",
        "train.optimizer=adamw", "train.strategy=lora", "train.lora_r=4"]


def _train(recipe_name: str, overrides: list[str], out: Path, **kwargs):
    """finetune() that also hands back the trained model (the Run's, as it is at the end)."""
    recipe = load_recipe(recipe_name, overrides, output_dir=str(out))
    set_seed(recipe.train.seed)  # as finetune() does: the adapters' initialisation is seeded
    built = {}

    def build(r):
        built["run"] = getattr(ft, ft.tasks.get(r.task).builder.split(":")[1])(r)
        return built["run"]
    results = ft.train(recipe, build, kwargs.get("resume"), kwargs.get("max_steps"))
    return results, built["run"].model.eval()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("lora-text")
    data = write_review_parquet(root / "data", 32, 16)
    overrides = FAST + [f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=32"]
    results, model = _train("imdb", overrides, root / "run")
    return root / "run", model, overrides


def _lora_count(model, r: int) -> int:
    """r * (in + out) for each Linear (or GPT-2 Conv1D) that got an adapter."""
    return sum(r * (m.base_layer.weight.shape[0] + m.base_layer.weight.shape[1])
               for m in model.modules() if hasattr(m, "lora_A"))


def test_lora_trains_only_adapters_and_the_head(text_run):
    _, model, _ = text_run
    trainable, total = trainable_parameters(model)
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert len(adapted) == 4 and all(n.endswith(("query", "value")) for n in adapted)  # peft's BERT default
    head = 32 * 2 + 2  # classifier Linear(32 -> 2)
    assert _lora_count(model, 4) == 4 * 4 * (32 + 32)
    assert trainable == 4 * 4 * (32 + 32) + head
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "classifier.modules_to_save" in n for n in names)
    assert trainable / total < 0.2


def test_adapter_folder_is_small_and_predicts_as_trained(text_run, tiny_bert_dir):
    from hfkit.inference import TextClassifier
    from hfkit.results import read_result

    run, model, _ = text_run
    assert (run / "adapter_config.json").is_file() and (run / "adapter_model.safetensors").is_file()
    assert not (run / "model.safetensors").exists() and not (run / "README.md").exists()
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        Path(tiny_bert_dir).resolve())
    found = read_result(str(run))
    assert found.adapter and found.task.name == "text-classification" and found.labels == ["neg", "pos"]
    full = (tiny_bert_dir / "model.safetensors").stat().st_size
    assert (run / "adapter_model.safetensors").stat().st_size * 5 < full
    classifier = TextClassifier(str(run))
    enc = classifier.tokenizer(["the film was wonderful", "dreadful plot"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(classifier.model(**enc).logits, model(**enc).logits)
    assert [r[0][0] for r in classifier.predict(["a great film"])] in (["neg"], ["pos"])


def test_merged_folder_is_plain_and_gives_the_same_outputs(text_run, tmp_path):
    from hfkit.cli import main
    from hfkit.inference import TextClassifier

    run, _, _ = text_run
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    adapter, merged = TextClassifier(str(run)), TextClassifier(str(tmp_path / "merged"))
    enc = adapter.tokenizer(["the film was wonderful", "boring"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(merged.model(**enc).logits, adapter.model(**enc).logits,
                                   rtol=1e-5, atol=1e-5)
    # merging again, into the merged folder or into the adapter folder itself, is refused: nothing overwritten
    kept = {p: p.read_bytes() for p in [*run.iterdir(), *(tmp_path / "merged").iterdir()] if p.is_file()}
    for out in (tmp_path / "merged", run):
        assert main(["merge", str(run), "--out", str(out)]) == 2
    assert {p: p.read_bytes() for p in kept} == kept


def test_export_and_push_of_a_local_base_adapter_refuse_with_what_to_do(text_run):
    from hfkit.export import export
    from hfkit.hub import push_plan

    run, _, _ = text_run
    with pytest.raises(ValueError, match="hfkit merge"):
        export(str(run))
    with pytest.raises(ValueError, match="hfkit merge"):
        push_plan(run)


def test_resumed_lora_run_equals_uninterrupted(tiny_bert_dir, tmp_path):
    """Stopped mid-epoch and resumed: the adapters (and all else) equal an uninterrupted run's, bit
    for bit. (The BERT's dropout is off here; test_text_e2e's resume test keeps it on.)"""
    import shutil

    base = Path(shutil.copytree(tiny_bert_dir, tmp_path / "base"))
    config = json.loads((base / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (base / "config.json").write_text(json.dumps(config))
    data = write_review_parquet(tmp_path / "data", 32, 16)
    overrides = FAST + [f"data.path={data}", f"model.name={base}", "data.max_length=32",
                        "train.epochs=2", "train.keep_checkpoints=5"]  # 4 steps per epoch
    _train("imdb", overrides, tmp_path / "full")
    first, _ = _train("imdb", overrides, tmp_path / "split", max_steps=3)
    assert first["global_step"] == 3
    resumed, _ = _train("imdb", overrides, tmp_path / "split", resume="latest")
    assert resumed["global_step"] == 8
    a = load_file(find_checkpoint(tmp_path / "full", "latest") / "model.safetensors")
    b = load_file(find_checkpoint(tmp_path / "split", "latest") / "model.safetensors")
    adapters = [k for k in a if "lora_" in k or "modules_to_save" in k]
    assert len(adapters) == 4 * 2 + 2 and a.keys() == b.keys()  # A and B of 4 Linears, the head's W and b
    assert all(torch.equal(a[k], b[k]) for k in a)  # the frozen base weights too
    full = json.loads((tmp_path / "full" / "all_results.json").read_text())
    assert resumed["eval_loss"] == full["eval_loss"]


def test_qa_adapter_answers_as_trained(tmp_path):
    from hfkit.inference import QuestionAnswerer

    base = write_chinese_qa_model(tmp_path / "base", "safetensors")
    data = write_toy_cmrc(tmp_path / "data", train=24, dev=8)
    overrides = FAST + [f"data.path={data}", f"model.name={base}", "data.max_length=64", "data.doc_stride=16"]
    _, model = _train("cmrc2018", overrides, tmp_path / "run")
    trainable, _ = trainable_parameters(model)
    assert trainable == _lora_count(model, 4) + 32 * 2 + 2  # adapters + qa_outputs Linear(32 -> 2)
    qa = QuestionAnswerer(str(tmp_path / "run"))
    enc = qa.tokenizer(["谁是之父？"], ["答案是艾伦。的一在"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(qa.model(**enc).start_logits, model(**enc).start_logits)
    assert qa(["谁是之父？"], ["答案是艾伦。的一在"])[0][0]["answer"]


def test_causal_lm_adapter_generates_as_trained(tmp_path, tiny_gpt2_dir):
    from hfkit.inference import _load_causal_lm, generate

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([REPETITIVE] * 20))
    overrides = FAST + [f"data.path={corpus}", "data.config=null", f"model.name={tiny_gpt2_dir}",
                        "data.block_size=32", "eval.metric=perplexity"]
    _, model = _train("gpt2", overrides, tmp_path / "run")
    trainable, _ = trainable_parameters(model)
    assert trainable == _lora_count(model, 4) == 2 * 4 * (32 + 96)  # c_attn Conv1D(32 -> 96), no head
    loaded, tokenizer = _load_causal_lm(str(tmp_path / "run"), None)
    ids = tokenizer("the quick brown", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    text = generate(str(tmp_path / "run"), "the quick", max_new_tokens=4, temperature=0)
    assert text.startswith("the quick")
    # hfkit evaluate of the adapter on its own text: the part training held out, training's perplexity
    from hfkit.evaluation import evaluate_causal_lm

    trained = json.loads((tmp_path / "run" / "all_results.json").read_text())
    scored = evaluate_causal_lm(str(tmp_path / "run"), str(corpus), output_dir=str(tmp_path / "eval"))
    assert scored["split"] == "train (the part training held out)"
    assert scored["blocks"] == trained["eval_samples"]
    assert math.isclose(scored["eval_perplexity"], trained["eval_perplexity"], rel_tol=1e-5)


def test_lora_fields_are_errors_where_they_do_nothing():
    with pytest.raises(RecipeError, match="train.lora_r set, but train.strategy=full"):
        load_recipe("hymenoptera", ["train.lora_r=4"])
    with pytest.raises(RecipeError, match="train.lora_alpha, train.lora_dropout set"):
        load_recipe("imdb", ["train.lora_alpha=8", "train.lora_dropout=0.1"])
    assert load_recipe("hymenoptera", ["train.strategy=lora", "train.lora_r=4"]).train.lora_r == 4
    with pytest.raises(RecipeError, match="train.strategy=linear-probe"):
        load_recipe("gpt2", ["train.strategy=linear-probe"])
    with pytest.raises(RecipeError, match="lora_target_modules"):
        load_recipe("imdb", ["train.strategy=lora", "train.lora_target_modules= , "])
    train = load_recipe("imdb", ["train.strategy=lora", "train.lora_target_modules=query, key"]).train
    assert train.target_modules() == ["query", "key"]


# ---------------------------------------------------------------------------------------------
# timm


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """hymenoptera with LoRA on a ResNet-18 whose "pretrained" weights are a local file (random
    weights saved by timm: they stand in for the Hub's, which these tests do not download)."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("lora-image")
    data = write_image_folder(root / "images", {"train": 12, "val": 6})
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18").state_dict(), root / "resnet18.safetensors")
    overrides = tiny_image_overrides(data) + [f"model.pretrained={root / 'resnet18.safetensors'}",
                                              "train.strategy=lora", "train.lora_r=4", "train.epochs=1"]
    results, model = _train("hymenoptera", overrides, root / "run")
    return root / "run", model


def test_lora_on_a_timm_resnet_adapts_the_block_convolutions_and_trains_the_head(image_run):
    import timm

    _, model = image_run
    adapted = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
               if hasattr(m, "lora_A")}
    blocks = {f"layer{i}.{j}.conv{k}" for i in range(1, 5) for j in range(2) for k in (1, 2)}
    shortcuts = {f"layer{i}.0.downsample.0" for i in (2, 3, 4)}
    assert set(adapted) == blocks | shortcuts  # not the stem's conv1, not fc
    r = 4  # a conv adapter: A is r filters of the layer's kernel, B a 1x1 conv from r to its outputs
    lora = sum(r * (m.base_layer.in_channels * m.base_layer.kernel_size[0] * m.base_layer.kernel_size[1]
                    + m.base_layer.out_channels) for m in adapted.values())
    head = 512 * 2 + 2
    # batch norms train too (their running statistics move in training anyway): scale and shift
    norms = 2 * sum(m.num_features for m in timm.create_model("resnet18").modules()
                    if isinstance(m, torch.nn.BatchNorm2d))
    trainable, total = trainable_parameters(model)
    assert trainable == lora + head + norms and trainable / total < 0.05
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in names)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith("conv1.weight")
                   and "layer" not in n)  # the stem


def test_a_timm_adapter_folder_predicts_as_trained_and_merges_to_a_plain_timm_folder(image_run, tmp_path,
                                                                                      capsys):
    import timm

    from hfkit.cli import main
    from hfkit.export import export
    from hfkit.hub import push_plan
    from hfkit.inference import ImageClassifier
    from hfkit.results import read_result

    run, model = image_run
    assert (run / "adapter_model.safetensors").is_file() and not (run / "model.safetensors").exists()
    found = read_result(str(run))
    assert found.adapter and found.family == "timm" and found.labels == ["ants", "bees"]
    classifier = ImageClassifier(str(run))
    x = torch.randn(2, 3, 32, 32)
    model.to(memory_format=torch.contiguous_format)  # trained channels_last, as the recipe says; served not
    with torch.inference_mode():
        assert torch.equal(classifier.model(x), model(x))
    image = next((run.parent / "images" / "val").rglob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", "--model", str(run), str(image)]) == 0
    assert classifier.predict([image], top_k=1)[0][0][0] in capsys.readouterr().out
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    merged = timm.create_model(f"local-dir:{tmp_path / 'merged'}", pretrained=True).eval()
    with torch.inference_mode():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-4, atol=1e-4)
    assert merged.pretrained_cfg["label_names"] == ["ants", "bees"]
    with pytest.raises(ValueError, match="hfkit merge"):
        export(str(run))
    with pytest.raises(ValueError, match="hfkit merge"):
        push_plan(run)

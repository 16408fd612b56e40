"""train.strategy=lora on tiny transformers models: what trains, what is saved, what loads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from conftest import REPETITIVE, write_chinese_qa_model, write_review_parquet, write_toy_cmrc
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


def test_lora_fields_are_errors_where_they_do_nothing():
    with pytest.raises(RecipeError, match="train.lora_r"):
        load_recipe("hymenoptera", ["train.lora_r=4"])
    with pytest.raises(RecipeError, match="train.strategy=lora"):
        load_recipe("hymenoptera", ["train.strategy=lora"])
    with pytest.raises(RecipeError, match="train.strategy=linear-probe"):
        load_recipe("gpt2", ["train.strategy=linear-probe"])
    with pytest.raises(RecipeError, match="lora_target_modules"):
        load_recipe("imdb", ["train.strategy=lora", "train.lora_target_modules= , "])
    assert load_recipe("imdb", ["train.lora_target_modules=query, key"]).train.target_modules() == [
        "query", "key"]

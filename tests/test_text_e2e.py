"""The text recipes end to end on tiny models and data, offline, through `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPETITIVE, REPO, write_review_parquet

pytestmark = pytest.mark.slow


def _launch(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "scripts/finetune.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=timeout)


def _hfkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hfkit.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory, tiny_bert_dir) -> Path:
    root = tmp_path_factory.mktemp("imdb")
    data = write_review_parquet(root / "data")
    out = root / "run"
    proc = _launch(["--recipe", "imdb", "--output-dir", str(out), *_sets([
        f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=64", "train.epochs=8",
        "train.lr=3e-3", "train.batch_size=16", "train.warmup_ratio=0", "train.mixed_precision=no"])])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_text_classifier_learns_and_saves_a_loadable_folder(imdb_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    results = json.loads((imdb_run / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9 and results["eval_f1"] >= 0.9
    assert results["epoch"] == 8 and results["train_samples"] == 160
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.yaml",
                 "training_curves.png", "confusion_matrix.png"):
        assert (imdb_run / name).is_file(), name
    model = AutoModelForSequenceClassification.from_pretrained(imdb_run)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert AutoTokenizer.from_pretrained(imdb_run)("great movie")["input_ids"]


def _table_rows(section: str) -> list[list[str]]:
    """The cells of a markdown table's body rows."""
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| text |")]


def test_predictions_md_shows_texts_and_the_most_confidently_wrong_as_predict_scores_them(imdb_run):
    from hfkit.hub import push_plan
    from hfkit.inference import TextClassifier

    page = (imdb_run / "predictions.md").read_text(encoding="utf-8")
    shown, worst = page.split("## 5 evaluation texts\n", 1)[1].split("## The most confidently wrong", 1)
    rows = _table_rows(shown)
    assert len(rows) == 5
    classifier = TextClassifier(str(imdb_run))
    for text, prediction, probability, true in rows:
        name, prob = classifier.predict([text], top_k=1)[0][0]  # the toy reviews are short: not cut
        assert prediction.strip("*") == name and float(probability) == pytest.approx(prob, abs=0.006)
        assert prediction.startswith("**") == (name != true)
    wrong = _table_rows(worst)
    assert all(w[1].startswith("**") for w in wrong) and (wrong or "None." in worst)
    assert [float(w[2]) for w in wrong] == sorted((float(w[2]) for w in wrong), reverse=True)
    assert "predictions.md" in push_plan(imdb_run)[1]  # quoted evaluation data stays local


def test_predict_prints_labels_for_texts(imdb_run):
    proc = _hfkit("predict", "--model", str(imdb_run), "--top-k", "2",
                  "the film was wonderful", "the plot was dreadful")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "the film was wonderful" and lines[3] == "the plot was dreadful"
    assert lines[1].split()[-1] == "pos" and lines[4].split()[-1] == "neg"  # top label of each


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, tiny_gpt2_dir) -> Path:
    root = tmp_path_factory.mktemp("gpt2")
    text = root / "corpus.txt"
    text.write_text("\n".join([REPETITIVE] * 120))
    out = root / "run"
    proc = _launch(["--recipe", "gpt2", "--output-dir", str(out), *_sets([
        f"data.path={text}", "data.config=null", f"model.name={tiny_gpt2_dir}", "data.block_size=32",
        "train.epochs=10",
        "train.lr=3e-3", "train.batch_size=8", "train.mixed_precision=no"])])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Removed shared tensor" not in proc.stdout + proc.stderr  # accelerate's note at each checkpoint
    return out


def test_gpt2_perplexity_falls(gpt2_run, tiny_gpt2_dir):
    results = json.loads((gpt2_run / "all_results.json").read_text())
    history = json.loads(sorted((gpt2_run / "checkpoints").glob("step-*"))[-1].joinpath(
        "trainer_state.json").read_text())["history"]
    vocab = json.loads((tiny_gpt2_dir / "config.json").read_text())["vocab_size"]
    assert history[0]["eval_perplexity"] < vocab / 2  # far below a random model's ~vocab size
    assert history[-1]["eval_perplexity"] < history[0]["eval_perplexity"]
    assert results["eval_perplexity"] < 3  # the repetitive text is almost memorised


def test_generation_is_repeatable_with_a_seed(gpt2_run):
    args = ["generate", "--model", str(gpt2_run), "--prompt", "the quick", "--max-new-tokens", "12",
            "--temperature", "0.8", "--top-p", "0.95", "--seed", "0"]
    first, second = _hfkit(*args), _hfkit(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("the quick")
    greedy = _hfkit("generate", "--model", str(gpt2_run), "--prompt", "the quick brown",
                    "--max-new-tokens", "6", "--temperature", "0")
    assert "fox" in greedy.stdout  # the memorised continuation


def test_predict_cuts_texts_where_training_did(tiny_bert_dir, tmp_path):
    """A run trained on 8-token texts: hfkit predict on a long text answers as the model does on its
    first 8 tokens, as the evaluation scored it (not on 128, the model's own limit)."""
    import shutil

    import torch

    from hfkit.inference import TextClassifier
    from hfkit.recipes import load_recipe, save_recipe

    run = tmp_path / "run"
    shutil.copytree(tiny_bert_dir, run)
    save_recipe(load_recipe("imdb", ["data.max_length=8"], output_dir=str(run)), run / "recipe.yaml")
    classifier = TextClassifier(str(run), "cpu")
    assert classifier.max_length == 8
    text = "a wonderful film , the actors were brilliant and the story kept me hooked " * 4
    (ranked,) = classifier.predict([text], top_k=2)
    enc = classifier.tokenizer([text], truncation=True, max_length=8, return_tensors="pt")
    with torch.no_grad():
        probs = classifier.model(**enc).logits.softmax(-1)[0]
    assert [s for _, s in ranked] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-6)
    assert TextClassifier(str(tiny_bert_dir), "cpu").max_length == 128  # no recipe: the model's limit


def test_a_resumed_text_run_with_dropout_equals_an_uninterrupted_one(tiny_bert_dir, tmp_path):
    """Dropout draws from torch's global generator, which checkpoints restore; nothing else may draw
    from it (a DataLoader's iterator takes its seed from there unless it has a generator of its own),
    or a resumed run masks other units than an uninterrupted one."""
    import torch
    from safetensors.torch import load_file

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe
    from hfkit.training import find_checkpoint

    data = write_review_parquet(tmp_path / "data", train=32, test=16)
    overrides = ["train.mixed_precision=no", "train.batch_size=8", "train.lr=1e-3", "train.optimizer=adamw",
                 f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=32", "train.epochs=2",
                 "train.keep_checkpoints=5"]  # 4 steps per epoch; the tiny BERT's dropout is 0.1

    def run(out, **kwargs):
        return finetune(load_recipe("imdb", overrides, output_dir=str(out)), **kwargs)

    full = run(tmp_path / "full")
    assert run(tmp_path / "split", max_steps=3)["global_step"] == 3
    resumed = run(tmp_path / "split", resume="latest")
    a = load_file(find_checkpoint(tmp_path / "full", "latest") / "model.safetensors")
    b = load_file(find_checkpoint(tmp_path / "split", "latest") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["eval_loss"] == full["eval_loss"]


def test_a_resumed_gpt2_run_equals_an_uninterrupted_one_and_keeps_its_tie(tiny_gpt2_dir, tmp_path):
    """GPT-2's lm_head is its token embedding: checkpoints hold the shared tensor once (accelerate
    drops the copy), and loading one ties them again, so a resumed run is the uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    from hfkit.finetune import finetune
    from hfkit.inference import _load_causal_lm
    from hfkit.recipes import load_recipe
    from hfkit.training import find_checkpoint

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([REPETITIVE] * 40))
    overrides = [f"data.path={corpus}", "data.config=null", f"model.name={tiny_gpt2_dir}",
                 "data.block_size=16", "train.epochs=2", "train.batch_size=8", "train.lr=3e-3",
                 "train.mixed_precision=no",
                 "train.keep_checkpoints=5"]

    def run(out, **kwargs):
        return finetune(load_recipe("gpt2", overrides, output_dir=str(out)), **kwargs)

    full = run(tmp_path / "full")
    steps = full["global_step"]
    assert steps >= 4
    assert run(tmp_path / "split", max_steps=steps // 2 + 1)["global_step"] == steps // 2 + 1
    resumed = run(tmp_path / "split", resume="latest")
    a = load_file(find_checkpoint(tmp_path / "full", "latest") / "model.safetensors")
    b = load_file(find_checkpoint(tmp_path / "split", "latest") / "model.safetensors")
    assert "lm_head.weight" not in a  # the shared copy left out, as accelerate warns
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["eval_loss"] == full["eval_loss"]
    model, _ = _load_causal_lm(str(tmp_path / "split"), "cpu")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()

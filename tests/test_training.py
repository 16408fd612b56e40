from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfkit.finetune import finetune
from hfkit.recipes import load_recipe
from hfkit.training import find_checkpoint


def _run(overrides, out: Path, **kwargs):
    recipe = load_recipe("hymenoptera", overrides, output_dir=str(out))
    return finetune(recipe, **kwargs)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(find_checkpoint(out, "latest") / "model.safetensors")


@pytest.mark.parametrize("stop_at,accumulate", [(4, 1), (6, 1), (2, 2)])
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_overrides, tmp_path, stop_at, accumulate):
    """Stop mid-epoch (or exactly at an epoch end), resume: the same weights, bit for bit."""
    overrides = tiny_overrides + [f"train.gradient_accumulation_steps={accumulate}",
                                  "train.keep_checkpoints=5"]
    full = _run(overrides, tmp_path / "full")
    first = _run(overrides, tmp_path / "split", max_steps=stop_at)
    assert first["global_step"] == stop_at
    resumed = _run(overrides, tmp_path / "split", resume="latest")
    assert resumed["global_step"] == full["global_step"] == 12 // accumulate
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["eval_accuracy"] == full["eval_accuracy"]


def test_checkpoints_are_complete_and_pruned(tiny_overrides, tmp_path):
    _run(tiny_overrides + ["train.checkpoint_steps=2", "train.keep_checkpoints=2"], tmp_path)
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == ["step-00000010", "step-00000012"]  # no temporary folder left behind
    state = json.loads((tmp_path / "checkpoints" / folders[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["global_step"] == 12 and len(state["history"]) == 2
    assert (tmp_path / "checkpoints" / folders[-1] / "recipe.yaml").is_file()


def test_a_new_run_refuses_to_mix_with_old_checkpoints(tiny_overrides, tmp_path):
    _run(tiny_overrides, tmp_path, max_steps=1)
    with pytest.raises(FileExistsError, match="--resume latest"):
        _run(tiny_overrides, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(tiny_overrides, tmp_path / "empty", resume="latest")


def test_the_model_learns_and_the_best_epoch_is_kept(tiny_overrides, tmp_path):
    results = _run(tiny_overrides + ["train.epochs=4", "train.lr=0.05"], tmp_path)
    assert results["eval_accuracy"] >= 0.9
    history = json.loads((find_checkpoint(tmp_path, "latest") / "trainer_state.json").read_text())["history"]
    best = max(h["eval_accuracy"] for h in history)
    assert results["eval_accuracy"] == best
    assert set(results["eval_per_class_accuracy"]) == {"ants", "bees"}


def test_early_stopping(tiny_overrides, tmp_path):
    # a negligible lr: accuracy stays where it starts, so patience 1 stops the run early
    results = _run(tiny_overrides + ["train.epochs=6", "train.early_stopping_patience=1",
                                     "train.lr=1e-12"], tmp_path)
    assert results["epoch"] < 6
    assert results["epoch"] == results["best_epoch"] + 1


@pytest.mark.parametrize("strategy", ["linear-probe", "freeze-then-unfreeze"])
def test_frozen_backbone_does_not_change(tiny_overrides, tmp_path, strategy):
    overrides = tiny_overrides + [f"train.strategy={strategy}", "train.epochs=1", "train.weight_decay=0"]
    _run(overrides, tmp_path / "run")
    _run(overrides, tmp_path / "init", max_steps=1)  # same seed: the same initial weights
    init_dir = tmp_path / "init" / "checkpoints"
    trained = _final_weights(tmp_path / "run")
    # after one step the backbone is still the initial one under a frozen strategy
    first = load_file(next(init_dir.iterdir()) / "model.safetensors")
    assert torch.equal(trained["conv1.weight"], first["conv1.weight"])
    assert not torch.equal(trained["fc.weight"], first["fc.weight"])


def test_bf16_mixed_precision_trains(tiny_overrides, tmp_path):
    results = _run(tiny_overrides + ["train.mixed_precision=bf16", "train.epochs=1"], tmp_path)
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["global_step"] == 6
    weights = load_file(tmp_path / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())


def test_tensorboard_logs(tiny_overrides, tmp_path):
    """train.tensorboard writes event files (hub.push is tested against a fake Hub in test_push.py)."""
    _run(tiny_overrides + ["train.epochs=1", "train.tensorboard=true"], tmp_path)
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import write_cifar_like
from safetensors.torch import load_file

from hfkit.finetune import finetune
from hfkit.recipes import load_recipe
from hfkit.training import find_checkpoint


def _run(overrides, out: Path, **kwargs):
    recipe = load_recipe("hymenoptera", overrides, output_dir=str(out))
    return finetune(recipe, **kwargs)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(find_checkpoint(out, "latest") / "model.safetensors")


@pytest.mark.parametrize("stop_at,accumulate,every", [(4, 1, 1), (6, 1, 1), (2, 2, 1), (3, 1, 2), (9, 1, 2)])
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_overrides, tmp_path, stop_at, accumulate,
                                                          every):
    """Stop mid-epoch (or exactly at an epoch end), resume: the same weights, bit for bit; also when
    epoch ends are not checkpointed (train.checkpoint_epochs=2)."""
    overrides = tiny_overrides + [f"train.gradient_accumulation_steps={accumulate}",
                                  "train.keep_checkpoints=5", f"train.checkpoint_epochs={every}"]
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
    # the running sums are checkpointed too: the resumed epoch's train loss covers the whole epoch
    assert _train_history(tmp_path / "split") == _train_history(tmp_path / "full")


def _train_history(out: Path) -> list[dict]:
    history = json.loads((find_checkpoint(out, "latest") / "trainer_state.json").read_text())["history"]
    return [{k: v for k, v in row.items() if k.startswith("train_")} for row in history]


def test_checkpoints_are_complete_and_pruned(tiny_overrides, tmp_path):
    _run(tiny_overrides + ["train.checkpoint_steps=2", "train.keep_checkpoints=2"], tmp_path)
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == ["step-00000010", "step-00000012"]  # no temporary folder left behind
    state = json.loads((tmp_path / "checkpoints" / folders[-1] / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["global_step"] == 12 and len(state["history"]) == 2
    assert (tmp_path / "checkpoints" / folders[-1] / "recipe.yaml").is_file()


def test_checkpoint_epochs_saves_every_nth_epoch_and_the_last(tiny_overrides, tmp_path):
    """6 steps per epoch; with checkpoint_epochs=2 over 3 epochs: after epochs 2 and 3 only."""
    results = _run(tiny_overrides + ["train.epochs=3", "train.checkpoint_epochs=2",
                                     "train.keep_checkpoints=5"], tmp_path)
    assert results["global_step"] == 18
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000012",
                                                                            "step-00000018"]
    state = json.loads((tmp_path / "checkpoints" / "step-00000018" / "trainer_state.json").read_text())
    assert len(state["history"]) == 3  # every epoch was still evaluated


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
    """train.tensorboard writes event files with tags grouped (train/..., eval/...) and the loss of
    every optimizer step (hub.push is tested against a fake Hub in test_push.py)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tiny_overrides + ["train.epochs=2", "train.tensorboard=true"], tmp_path)
    steps: dict[str, list[int]] = {}
    for events in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"):  # one per writer
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    assert {"train/loss", "train/accuracy", "eval/loss", "eval/accuracy", "train/lr"} <= set(steps)
    assert sorted(steps["train/step_loss"]) == list(range(1, 13))  # 6 steps x 2 epochs
    assert sorted(steps["eval/accuracy"]) == [6, 12]


def test_each_optimizer_step_has_its_loss_in_the_history_and_the_curves(tiny_overrides, tmp_path,
                                                                        monkeypatch):
    import matplotlib.pyplot as plt

    _run(tiny_overrides + ["train.epochs=2"], tmp_path)
    history = json.loads((find_checkpoint(tmp_path, "latest") / "trainer_state.json").read_text())["history"]
    for record in history:  # 24 images, batch 4: 6 steps of equal size, whose mean is the epoch's
        assert len(record["train_step_losses"]) == 6
        assert sum(record["train_step_losses"]) / 6 == pytest.approx(record["train_loss"], rel=1e-5)
    from hfkit import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_curves(history, tmp_path / "again.png", best_epoch=2)
    loss_axes = figures[0].axes[0]
    steps = next(line for line in loss_axes.lines if line.get_label() == "train (each step)")
    assert list(steps.get_ydata()) == history[0]["train_step_losses"] + history[1]["train_step_losses"]
    assert any(line.get_label() == "best model (epoch 2)" for line in loss_axes.lines)
    plt.close(figures[0])


# -- no waiting on the device per step ---------------------------------------------------------

# Tensor methods that copy a value to the host, or (new_tensor) a host value to the device without
# pinned memory: on a GPU each one waits for all queued work
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__",
              "new_tensor")


def _count_host_reads(monkeypatch) -> Counter:
    counts: Counter = Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    return counts


def test_training_steps_read_nothing_back_from_the_device(tmp_path, monkeypatch):
    """The same in-memory run with 18 and with 9 steps per epoch (batch 4, batch 8) reads the same
    number of values back from the device: none per step, only per epoch (loss totals, metrics),
    with the progress bar's periodic refresh switched off. Covers augmentation, mixup, EMA,
    the scheduler and the optimizer step."""
    import hfkit.training

    monkeypatch.setattr(hfkit.training, "PROGRESS_SECONDS", float("inf"))
    data = write_cifar_like(tmp_path / "data", per_class=24, test_per_class=4, size=16)
    counts = {}
    for batch in (4, 8):
        recipe = load_recipe("cifar10", [
            f"data.path={data}", "model.name=test_resnet", "data.image_size=16", "train.epochs=2",
            f"train.batch_size={batch}", "train.eval_batch_size=6", "train.mixed_precision=no",
            "train.mixup=0.2", "train.ema_decay=0.9", "eval.num_preview_images=0"],
            output_dir=str(tmp_path / f"run{batch}"))
        reads = _count_host_reads(monkeypatch)
        results = finetune(recipe)
        monkeypatch.undo()
        monkeypatch.setattr(hfkit.training, "PROGRESS_SECONDS", float("inf"))
        assert results["global_step"] == 2 * 72 // batch
        counts[batch] = dict(reads)
    assert counts[4] == counts[8], counts


def test_progress_bar_refresh_is_the_only_read_per_step(tiny_overrides, tmp_path, monkeypatch):
    """With a refresh after every step, the bar shows the running loss: one read per step."""
    import hfkit.training

    counts = {}
    for interval in (float("inf"), 0.0):
        monkeypatch.setattr(hfkit.training, "PROGRESS_SECONDS", interval)
        reads = _count_host_reads(monkeypatch)
        _run(tiny_overrides + ["train.epochs=1"], tmp_path / f"run{interval}")
        counts[interval] = reads["tolist"]
        monkeypatch.undo()
    assert counts[0.0] - counts[float("inf")] == 6  # 6 optimizer steps


# -- compile --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compiled_training_has_one_batch_shape_and_saves_a_plain_model(tmp_path, monkeypatch):
    """torch.compile on the CPU: the last partial batch is dropped (30 images, batch 8: 3 steps),
    the recipe's mode reaches torch.compile, and the saved weights load without compile's names."""
    import timm

    data = write_cifar_like(tmp_path / "data", per_class=10, test_per_class=2, size=16)
    modes = []
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw.get("mode"))
                        or compile_(model, **kw))
    recipe = load_recipe("cifar10", [
        f"data.path={data}", "model.name=test_resnet", "data.image_size=16", "train.epochs=1",
        "train.batch_size=8", "train.mixed_precision=no", "train.compile=true",
        "train.compile_mode=max-autotune-no-cudagraphs", "eval.num_preview_images=0"],
        output_dir=str(tmp_path / "run"))
    results = finetune(recipe)
    assert modes == ["max-autotune-no-cudagraphs"]
    assert results["global_step"] == 3 and 0.0 <= results["eval_accuracy"] <= 1.0
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert not any("_orig_mod" in k for k in weights)
    model = timm.create_model(f"local-dir:{tmp_path / 'run'}", pretrained=True)
    assert set(model.state_dict()) >= set(weights)


# -- optimizer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_of_norm_layers_and_biases_follows_the_recipe(decay_all):
    import timm

    from hfkit.training import make_optimizer

    t = load_recipe("cifar10", [f"train.weight_decay_norm_and_bias={str(decay_all).lower()}"]).train
    model = timm.create_model("test_resnet", num_classes=3)
    optimizer = make_optimizer(model, t)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    bn = model.bn1.weight if hasattr(model, "bn1") else next(
        m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert decay[id(conv)] == t.weight_decay
    assert decay[id(bn)] == (t.weight_decay if decay_all else 0.0)
    assert len(decay) == len(list(model.parameters()))


@pytest.mark.parametrize("name,fused", [("adam", True), ("adamw", True), ("sgd", False),
                                        ("lamb", False), ("rmsprop", False)])
def test_adam_and_adamw_take_torch_fused_step_on_a_cpu_with_the_same_update(name, fused):
    """On the CPU, Adam and AdamW take torch's fused step (torch's default is a Python loop over the
    parameters there), and two fused steps move every parameter as the unfused ones do: the
    recipe's groups (no weight decay on norms and biases) and the moments carry over."""
    import timm

    from hfkit.recipes import TrainArgs
    from hfkit.training import make_optimizer

    t = TrainArgs(optimizer=name, lr=0.05, weight_decay=0.5, momentum=0.9)
    steps = {}
    for device in ("cpu", None):
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=3)
        optimizer = make_optimizer(model, t, device)
        for _ in range(2):  # the second step uses the momentum buffers
            for p in model.parameters():  # O(1) gradients: Adam's step is ill-conditioned near 0
                p.grad = torch.randn_like(p)
            optimizer.step()
        steps[device] = ({g.get("fused") for g in optimizer.param_groups},
                         [p.detach().clone() for p in model.parameters()])
    assert steps["cpu"][0] == ({True} if fused else {None})
    assert steps[None][0] <= {None, False}  # no device given: torch's own choice
    for a, b in zip(steps["cpu"][1], steps[None][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # a lost weight decay: 2.5e-2 x p


def test_the_fused_step_only_on_a_cpu():
    from hfkit.training import fused_option

    assert fused_option("adamw", "cpu") == {"fused": True}
    assert fused_option("adamw", "cuda") == fused_option("adamw", "mps") == {}  # torch's default
    assert fused_option("no-such-optimizer", "cpu") == {}  # timm reports it when it builds


def test_a_loaded_state_keeps_this_devices_choice_of_step():
    """torch's load_state_dict takes each group's ``fused`` from the checkpoint: a checkpoint saved
    unfused (on a GPU, or before hfkit fused) resumes fused on a CPU, and a CPU one unfused where
    the step is torch's default."""
    from hfkit.recipes import TrainArgs
    from hfkit.training import make_optimizer

    t = TrainArgs(optimizer="adamw", lr=1e-3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    on_cpu, elsewhere = make_optimizer(model, t, "cpu"), make_optimizer(model, t, "cuda")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    on_cpu.step()
    elsewhere.step()
    saved_cpu, saved_elsewhere = on_cpu.state_dict(), elsewhere.state_dict()
    on_cpu.load_state_dict(saved_elsewhere)
    elsewhere.load_state_dict(saved_cpu)
    assert {g["fused"] for g in on_cpu.param_groups} == {True}
    assert {g["fused"] for g in elsewhere.param_groups} == {None}
    assert on_cpu.state_dict()["state"][0]["step"] == 1  # the moments themselves did load


def test_fused_sgd_would_fail_a_backbone_unfrozen_mid_run():
    """Why SGD stays unfused: parameters with momentum and parameters without in one group (a
    frozen backbone that starts training) make torch's fused SGD raise; if torch fixes it, this
    test says so and SGD can be fused too."""
    head, backbone = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([head, backbone], lr=0.1, momentum=0.9, fused=True)
    head.grad = torch.ones(3)
    optimizer.step()
    head.grad, backbone.grad = torch.ones(3), torch.ones(3)
    with pytest.raises(TypeError):
        optimizer.step()


def test_an_adamw_run_resumed_mid_epoch_equals_uninterrupted_and_steps_fused(tiny_overrides, tmp_path):
    """fit passes its device: the run's AdamW steps fused on the CPU, its checkpoint says so, and
    resuming it gives the uninterrupted run's weights bit for bit, also with a frozen-then-unfrozen
    backbone (the groups gain moments mid-run)."""
    overrides = tiny_overrides + ["train.optimizer=adamw", "train.lr=1e-3", "train.keep_checkpoints=5",
                                  "train.strategy=freeze-then-unfreeze"]
    _run(overrides, tmp_path / "full")
    _run(overrides, tmp_path / "split", max_steps=9)  # epoch 2 of 2: the backbone trains
    state = torch.load(find_checkpoint(tmp_path / "split", "latest") / "optimizer.bin", weights_only=True)
    assert {g["fused"] for g in state["param_groups"]} == {True}
    # every parameter has moments: the backbone trained before the stop
    assert len(state["state"]) == sum(len(g["params"]) for g in state["param_groups"])
    _run(overrides, tmp_path / "split", resume="latest")
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "split")
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- a crash while a checkpoint is written; a step saved twice ------------------------------------

def test_a_run_stopped_at_an_epoch_end_is_resumed_without_rewriting_its_checkpoint(tiny_overrides,
                                                                                   tmp_path):
    """Stopped by --max-steps at the end of epoch 1 (step 6): the epoch is evaluated before step 6
    is saved, so the resumed run has nothing to save again at step 6 and leaves that folder exactly
    as it was (replacing it, a crash could lose the only checkpoint); the run ends with the weights
    of an uninterrupted run."""
    full = _run(tiny_overrides, tmp_path / "full")
    _run(tiny_overrides + ["train.keep_checkpoints=5"], tmp_path / "run", max_steps=6)
    step6 = tmp_path / "run" / "checkpoints" / "step-00000006"
    state = json.loads((step6 / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["batches_in_epoch"] == 0 and len(state["history"]) == 1
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in step6.iterdir()}
    resumed = _run(tiny_overrides + ["train.keep_checkpoints=5"], tmp_path / "run", resume="latest")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in step6.iterdir()} == before
    assert resumed["global_step"] == full["global_step"]
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_killed_before_the_rename_the_complete_copy_is_resumed(tiny_overrides, tmp_path, monkeypatch):
    """Killed after the trainer state is written but before ``.tmp-step-N`` is renamed: the only
    copy of step N is the temporary one. ``--resume latest`` takes it; a fresh run is refused."""
    import hfkit.training

    full = _run(tiny_overrides, tmp_path / "full")
    replace = os.replace

    def killed_before_the_rename(src, dst):
        if Path(src).name == ".tmp-step-00000004":
            raise KeyboardInterrupt("kill -9")
        return replace(src, dst)

    monkeypatch.setattr(hfkit.training.os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_overrides, tmp_path / "run", max_steps=4)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [".tmp-step-00000004"]
    with pytest.raises(FileExistsError, match="--resume latest"):
        _run(tiny_overrides, tmp_path / "run")
    resumed = _run(tiny_overrides, tmp_path / "run", resume="latest")
    assert resumed["global_step"] == full["global_step"]
    a, b = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_incomplete_new_copy_is_not_taken_for_a_checkpoint(tiny_overrides, tmp_path):
    from hfkit.training import STATE_FILE, checkpoints

    _run(tiny_overrides, tmp_path, max_steps=2)
    root = tmp_path / "checkpoints"
    (root / "step-00000002").rename(root / ".tmp-step-00000002")
    (root / ".tmp-step-00000002" / STATE_FILE).unlink()  # killed inside save_state
    assert checkpoints(tmp_path) == []
    assert (root / ".tmp-step-00000002").is_dir()


def test_killed_while_the_best_model_is_moved_the_next_run_finishes_the_move(tmp_path, monkeypatch):
    """The best model and its predictions are one set: killed after moving the first file of a new
    best into the result folder, the next run into that folder moves the rest before it starts, so
    weights and eval_predictions.json belong to the same epoch."""
    import hfkit.training
    from hfkit.training import PREDICTIONS_FILE, WRITE_FOLDER

    replace, moved = os.replace, []

    def killed_after_one_move(src, dst):
        if Path(src).parent.name == WRITE_FOLDER and moved:
            raise KeyboardInterrupt("kill -9")
        moved.append(Path(src).name)
        return replace(src, dst)

    new = {"model.safetensors": b"new weights", PREDICTIONS_FILE: b"[1, 2]", "config.json": b"{}"}
    monkeypatch.setattr(hfkit.training.os, "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        hfkit.training.write_atomically(tmp_path, lambda tmp: [(tmp / k).write_bytes(v)
                                                               for k, v in new.items()])
    monkeypatch.undo()
    assert len(moved) == 1 and (tmp_path / WRITE_FOLDER).is_dir()  # half moved
    with hfkit.training.output_lock(tmp_path):  # what the next finetune into the folder does first
        pass
    assert not (tmp_path / WRITE_FOLDER).exists()
    assert {k: (tmp_path / k).read_bytes() for k in new} == new


def test_an_incomplete_best_model_set_is_dropped(tmp_path):
    from hfkit.training import WRITE_FOLDER, finish_interrupted_write

    (tmp_path / "model.safetensors").write_bytes(b"old")
    (tmp_path / WRITE_FOLDER).mkdir()
    (tmp_path / WRITE_FOLDER / "model.safetensors").write_bytes(b"half written")  # killed in write()
    finish_interrupted_write(tmp_path)
    assert not (tmp_path / WRITE_FOLDER).exists()
    assert (tmp_path / "model.safetensors").read_bytes() == b"old"


# -- resuming with other settings ----------------------------------------------------------------

def test_resume_with_settings_that_break_exactness_is_refused(tiny_overrides, tmp_path):
    """The issue's case: a checkpoint made with batch 4 and lr 0.01, resumed with batch 8 and
    lr 0.5. Refused before anything trains, naming both keys; the checkpoint's recipe is untouched."""
    made = tiny_overrides + ["train.lr=0.01"]
    _run(made, tmp_path, max_steps=3)
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    recipe_before = (checkpoint / "recipe.yaml").read_bytes()
    with pytest.raises(ValueError, match="other settings") as refused:
        _run(made + ["train.batch_size=8", "train.lr=0.5", "train.epochs=3"], tmp_path, resume="latest")
    message = str(refused.value)
    assert "train.batch_size: 4 in the checkpoint, 8 now" in message
    assert "train.lr: 0.01 in the checkpoint, 0.5 now" in message
    assert "train.epochs" not in message.split("Only")[0]  # epochs may change
    assert (checkpoint / "recipe.yaml").read_bytes() == recipe_before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [checkpoint.name]


def test_resume_may_add_epochs(tiny_overrides, tmp_path, capsys):
    """A finished 2-epoch run extended to 3 epochs: it trains one more epoch and says so."""
    _run(tiny_overrides + ["train.keep_checkpoints=5"], tmp_path)
    recipe_before = (tmp_path / "checkpoints" / "step-00000012" / "recipe.yaml").read_bytes()
    results = _run(tiny_overrides + ["train.keep_checkpoints=5", "train.epochs=3"], tmp_path,
                   resume="latest")
    assert results["global_step"] == 18 and results["epoch"] == 3
    assert "Resuming with train.epochs 2 -> 3: the run continues to epoch 3" in capsys.readouterr().out
    assert (tmp_path / "checkpoints" / "step-00000012" / "recipe.yaml").read_bytes() == recipe_before
    assert "epochs: 3" in (tmp_path / "checkpoints" / "step-00000018" / "recipe.yaml").read_text()


# -- one run per output folder -------------------------------------------------------------------

def test_a_run_holds_its_output_folder(tiny_overrides, tmp_path):
    """While a lock on the folder is held, a run into it is refused before it builds anything."""
    from hfkit.training import output_lock

    with output_lock(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="in use by a run that is still going"):
            _run(tiny_overrides, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    _run(tiny_overrides + ["train.epochs=1"], tmp_path / "run")  # free again once released


@pytest.mark.slow
def test_two_processes_cannot_share_an_output_folder(tiny_overrides, tmp_path):
    """Process A holds the folder; `hfkit finetune` B into it is refused with a message naming A.
    When A is killed with SIGKILL, the kernel frees the lock: no stale lock is left behind."""
    import signal
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from hfkit.training import output_lock\n"
         f"with output_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        sets = [a for o in tiny_overrides for a in ("--set", o)]
        second = subprocess.run([sys.executable, "-m", "hfkit.cli", "finetune", "--recipe", "hymenoptera",
                                 "--output-dir", str(out), *sets], capture_output=True, text=True,
                                cwd=REPO, timeout=300)
        assert second.returncode == 2
        assert f"in use by a run that is still going (pid {holder.pid}:" in second.stderr
        assert not (out / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from hfkit.training import output_lock

    with output_lock(out):
        pass


def _signal_the_launcher(sig, image_folder, tmp_path, to_child: bool = False,
                         extra: tuple[str, ...] = ()) -> tuple[str, Path]:
    """Start a long tiny run through a real `accelerate launch`, send ``sig`` to the launcher
    (or to the training process it started) after the first epoch and wait for the training
    process to end: (its log, its output dir)."""
    import contextlib
    import subprocess
    import sys
    import time

    import psutil
    from conftest import REPO, tiny_image_overrides

    sets = [a for o in [*tiny_image_overrides(image_folder), *extra] for a in ("--set", o)]
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "scripts/finetune.py", "--recipe",
           "hymenoptera", "--output-dir", str(out), *sets, "--set", "train.epochs=200"]
    with open(log, "w") as f:
        launcher = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "epoch 1  train_loss" not in log.read_text() and time.monotonic() < deadline:
            assert launcher.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        (child,) = psutil.Process(launcher.pid).children()
        workers = len(child.children())
        if to_child:
            child.send_signal(sig)
            child.wait(timeout=60)
            assert launcher.wait(timeout=30) != 0  # its child's 130
        else:
            launcher.send_signal(sig)
            assert launcher.wait(timeout=30) != 0
            child.wait(timeout=60)  # psutil.TimeoutExpired if it trains on
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group outlives its leader, the launcher
            os.killpg(launcher.pid, signal.SIGKILL)
    if extra:
        assert workers > 0, "the run was to have DataLoader workers"
    return log.read_text(), out


@pytest.mark.slow
def test_a_ctrl_c_to_the_training_process_alone_stops_it_with_a_checkpoint(image_folder, tmp_path):
    """What the warning of a slow stop says to do (`kill -INT PID`): the launcher, not signalled,
    waits for its training process, which stops after the step with a checkpoint."""
    text, out = _signal_the_launcher(signal.SIGINT, image_folder, tmp_path, to_child=True)
    assert "Interrupted at step" in text and "Traceback" not in text.split("Interrupted at step")[0]
    assert 6 < _stopped_at(out) < 200 * 6


def test_a_stop_that_would_outlast_the_launchers_patience_is_warned_of_once(
        tiny_overrides, tmp_path, monkeypatch, capsys):
    """accelerate 1.16 kills its training process 5 s after passing a Ctrl-C on: when a step and a
    checkpoint take longer (here: patience patched down to nothing), the first checkpoint says so."""
    import hfkit.training

    monkeypatch.setattr(hfkit.training, "launcher_kill_seconds", lambda: 1e-6)
    _run(tiny_overrides + ["train.epochs=2"], tmp_path)
    printed = capsys.readouterr().out
    assert printed.count("hfkit: warning: stopping takes up to about") == 1
    assert f"signal the training process itself: kill -INT {os.getpid()}" in printed


def test_the_stop_time_warning_and_the_launchers_patience(monkeypatch):
    import accelerate

    from hfkit import devices
    from hfkit.training import stop_time_warning

    assert stop_time_warning(1.0, 2.0, 5.0) is None  # fits in the 5 s
    assert stop_time_warning(9.0, 9.0, None) is None  # nothing kills this process
    warning = stop_time_warning(3.0, 2.5, 5.0)
    assert "up to about 5.5 s here (a step, 3.0 s, then the evaluation and the checkpoint, 2.5 s)" in warning
    assert "kills this process 5 s after" in warning
    assert devices.launcher_kill_seconds() is None  # not started by accelerate launch
    monkeypatch.setattr(devices, "launcher_pid", lambda: 12345)  # as if it were
    monkeypatch.setattr(accelerate, "__version__", "1.16.0")
    assert devices.launcher_kill_seconds() == 5.0
    monkeypatch.setattr(accelerate, "__version__", "1.15.2")  # passes nothing on, kills nothing
    assert devices.launcher_kill_seconds() is None
    monkeypatch.setenv("WORLD_SIZE", "2")  # several processes: torchrun's elastic agent
    assert devices.launcher_kill_seconds() == 30.0


def _stopped_at(out: Path) -> int:
    return json.loads((find_checkpoint(out, "latest") / "trainer_state.json").read_text())["global_step"]


@pytest.mark.slow
def test_sigterm_to_accelerate_launch_stops_the_run_with_a_checkpoint(image_folder, tmp_path):
    """accelerate 1.16 passes a SIGTERM on to the training process (and kills it 5 s later);
    older launchers die without passing it on, and the training process notices that its launcher
    is gone. Either way it stops after the current step, saves a checkpoint and exits, instead of
    training on as an orphan. Its DataLoader workers, which 1.16 sends the SIGTERM too, keep
    loading until it stops (they died of it, ending the run with "DataLoader worker ... killed")."""
    text, out = _signal_the_launcher(signal.SIGTERM, image_folder, tmp_path,
                                     extra=("data.in_memory=false", "data.num_workers=2"))
    assert "Stopping after this step and saving a checkpoint" in text
    assert "Interrupted at step" in text and "Traceback" not in text
    assert 6 <= _stopped_at(out) < 200 * 6


@pytest.mark.slow
def test_a_killed_launcher_leaves_a_checkpoint_of_where_the_run_was(image_folder, tmp_path):
    """`kill -9` (or the OOM killer) on `accelerate launch` passes nothing on, and breaks the
    training process's stderr, a pipe through the launcher in accelerate 1.16: without care the
    next progress-bar update ends the run with a BrokenPipeError and no checkpoint. It notices,
    says so on stdout, stops after the current step and saves a checkpoint."""
    text, out = _signal_the_launcher(signal.SIGKILL, image_folder, tmp_path)
    assert "The accelerate launcher has ended" in text
    assert "Interrupted at step" in text and "Traceback" not in text
    assert 6 < _stopped_at(out) < 200 * 6  # later than the first epoch's checkpoint


def test_the_console_marks_the_best_epoch_and_ends_with_the_best_result(tiny_overrides, tmp_path, capsys):
    results = _run(tiny_overrides + ["train.epochs=2"], tmp_path)
    out = capsys.readouterr().out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    best = results["best_epoch"]
    assert epochs[best - 1].endswith("(best)")
    assert (f"Best eval_accuracy {results['eval_accuracy']:.4f} at epoch {best} -> {tmp_path}/"
            in out.splitlines()[-1])


def test_result_files_are_readable_by_others_as_the_umask_allows(tiny_overrides, tmp_path):
    """safetensors wrote model.safetensors 0600; a result folder is for sharing (0644 here)."""
    _run(tiny_overrides + ["train.epochs=1"], tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json", "eval_predictions.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name



def test_a_classifier_that_answers_one_class_is_called_out():
    from hfkit.training import one_class_warning

    assert one_class_warning([1, 1, 1], ["neg", "pos"]) == (
        "Warning: all 3 evaluation predictions are class 1 (pos): the model does not tell the classes "
        "apart yet (more epochs or another train.lr may help).")
    assert "class 0 (neg)" in one_class_warning([0, 0], {0: "neg", 1: "pos"})
    assert one_class_warning([0, 1, 1], ["neg", "pos"]) is None
    assert one_class_warning([{"id": "q"}, {"id": "q"}]) is None  # QA n-best lists: not classes
    assert one_class_warning([4]) is None


@pytest.mark.slow
def test_accelerate_launch_that_started_fewer_processes_than_asked_says_so(tiny_overrides, tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --num_processes 2` without --multi_gpu runs one process and
    exits 0: the run says what happened and how to get two."""
    import subprocess
    import sys

    from conftest import REPO

    sets = [a for o in tiny_overrides for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "scripts/finetune.py", "--recipe", "hymenoptera", "--output-dir",
                           str(tmp_path / "run"), "--max-steps", "1", *sets],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("Warning: accelerate launch was asked for 2 processes but started 1: training runs in 1. "
            "For several processes on CPUs add --multi_gpu") in proc.stdout + proc.stderr


def test_a_sigterm_after_ctrl_c_does_not_abort_the_checkpoint_but_a_second_ctrl_c_does():
    """torchrun passes a SIGTERM on to its workers after the terminal's SIGINT reached them all:
    that must let them finish their checkpoint; a user's second Ctrl-C still aborts at once."""
    import signal

    from hfkit.training import StopRequest

    stop = StopRequest()
    stop._handle(signal.SIGINT, None)
    assert stop.requested
    stop._handle(signal.SIGTERM, None)  # no KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


def _broken_pipe_stream():
    """A text stream on a pipe whose reading end is closed, as stderr is once the launcher died."""
    read, write = os.pipe()
    os.close(read)
    return open(write, "w", encoding="utf-8")


def _read_until(fd: int, end: bytes) -> bytes:
    got = b""
    while not got.endswith(end) and (chunk := os.read(fd, 65536)):
        got += chunk
    return got


@pytest.mark.parametrize("first", ["line", "more than the buffer"])
def test_stderr_moves_to_stdout_when_its_pipe_breaks(monkeypatch, first):
    """A line fails at its flush (and is written to stdout then, once); a write larger than the
    stream's buffer fails at once (that text is lost). Either way what follows goes to stdout."""
    from hfkit.devices import LauncherStderr

    out_read, out_write = os.pipe()
    monkeypatch.setattr("sys.stdout", open(out_write, "w", encoding="utf-8"))
    stream = _broken_pipe_stream()
    err = LauncherStderr(stream)
    text = "epoch 2/200: 1/6\n" if first == "line" else "x" * 20_000 + "\n"
    err.write(text)
    err.flush()
    err.write("Stopping after this step\n")
    err.flush()
    got = _read_until(out_read, b"step\n")
    expected = (text if first == "line" else "") + "Stopping after this step\n"
    assert got == expected.encode()  # each once
    stream.close()


def test_stderr_goes_to_devnull_when_stdout_is_broken_too(monkeypatch):
    from hfkit.devices import LauncherStderr

    monkeypatch.setattr("sys.stdout", _broken_pipe_stream())
    err = LauncherStderr(_broken_pipe_stream())
    err.write("lost, but the run goes on\n")
    err.flush()
    err.write("and on\n")
    err.flush()


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 20), (5, 5), (30, 3000)])
def test_the_schedule_is_transformers_own_step_for_step(schedule, warmup, total):
    """make_scheduler spares image runs the import of transformers.optimization; its lrs are
    transformers' (constant: constant_with_warmup, since a recipe's warmup applies to every schedule)."""
    from transformers import get_scheduler

    from hfkit.training import make_scheduler

    def lrs(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        scheduler, seen = make(optimizer), []
        for _ in range(total + 2):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    name = "constant_with_warmup" if schedule == "constant" else schedule
    theirs = lrs(lambda o: get_scheduler(name, o, num_warmup_steps=warmup, num_training_steps=total))
    assert lrs(lambda o: make_scheduler(o, schedule, warmup, total)) == theirs
    assert theirs[0] == (0.0 if warmup else 0.3)

"""End to end through `accelerate launch`, as a user runs it, and back through the result folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import REPO

from hfkit.inference import ImageClassifier
from hfkit.recipes import load_recipe
from hfkit.training import find_checkpoint

pytestmark = pytest.mark.slow

RESULT_FILES = ["model.safetensors", "config.json", "recipe.yaml", "all_results.json",
                "training_curves.png", "confusion_matrix.png", "predictions.png"]


def _launch(args: list[str], processes: int = 1, timeout: int = 600,
            script: str = "scripts/finetune.py") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           *(["--multi_gpu"] if processes > 1 else []), script, *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if processes > 1:  # torchrun-launched processes on CPU: gloo (accelerate's MULTI_CPU)
        env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path]:
    from conftest import write_image_folder

    root = tmp_path_factory.mktemp("e2e")
    data = write_image_folder(root / "images", {"train": 12, "val": 6})
    overrides = [f"data.path={data}", "model.pretrained=false", "model.name=resnet18",
                 "data.image_size=32", "data.num_workers=0", "train.batch_size=4", "train.epochs=3",
                 "train.lr=0.05", "train.mixed_precision=no"]
    out = root / "run"
    proc = _launch(["--recipe", "hymenoptera", "--output-dir", str(out), *_sets(overrides)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "eval_accuracy" in proc.stdout + proc.stderr  # per-epoch metrics on the console
    return out, data


def test_result_folder_is_complete(run_dir):
    out, data = run_dir
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    results = json.loads((out / "all_results.json").read_text())
    for key in ("eval_accuracy", "eval_loss", "epoch", "train_runtime", "train_samples_per_second"):
        assert isinstance(results[key], (int, float)), key
    assert results["epoch"] == 3 and results["train_samples"] == 24
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == ["ants", "bees"] and config["num_classes"] == 2
    recipe = load_recipe(str(out / "recipe.yaml"))  # the resolved recipe repeats the run
    assert recipe.data.path == str(data) and recipe.train.epochs == 3 and recipe.data.image_size == 32


def test_result_folder_predicts_like_the_trained_model(run_dir):
    out, data = run_dir
    best_predictions = json.loads((out / "eval_predictions.json").read_text())  # beside the best model
    assert "best_predictions" not in (find_checkpoint(out, "latest") / "trainer_state.json").read_text()
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == ["ants", "bees"]
    classifier = ImageClassifier(str(out), device="cpu")
    val = sorted((data / "val").glob("*/*.jpg"))  # the eval set, in the order datasets reads it
    ranked = classifier.predict(val, top_k=2)
    predicted = [classifier.labels.index(r[0][0]) for r in ranked]
    assert predicted == best_predictions
    accuracy = sum(p == classifier.labels.index(f.parent.name) for p, f in zip(predicted, val)) / len(val)
    assert accuracy == json.loads((out / "all_results.json").read_text())["eval_accuracy"]
    with torch.no_grad():  # timm's own loader and hfkit's agree on the weights
        x = torch.randn(1, 3, 32, 32)
        assert torch.allclose(model(x), classifier.model(x))


def test_predict_command_prints_labels_and_scores(run_dir):
    out, data = run_dir
    image = sorted((data / "val" / "bees").glob("*.jpg"))[0]
    proc = subprocess.run([sys.executable, "-m", "hfkit.cli", "predict", "--model", str(out),
                           "--top-k", "2", str(image)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    assert {line.split()[-1] for line in lines[1:]} == {"ants", "bees"}
    scores = [float(line.split()[0].rstrip("%")) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 100) < 0.1


def test_bad_override_is_one_clear_line(tmp_path):
    proc = _launch(["--recipe", "hymenoptera", "--set", "train.lrr=0.1"], timeout=300)
    assert proc.returncode != 0
    assert "unknown key 'train.lrr'" in proc.stderr and "did you mean 'train.lr'" in proc.stderr
    assert "Traceback" not in proc.stderr.split("hfkit finetune: error")[0][-2000:]


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs two cores for two processes")
def test_two_processes_on_cpu(tiny_overrides, tmp_path):
    """The same script under `accelerate launch --num_processes 2` (DDP on gloo)."""
    proc = _launch(["--recipe", "hymenoptera", "--output-dir", str(tmp_path / "ddp"),
                    *_sets(tiny_overrides + ["train.epochs=1"])], processes=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    assert results["eval_samples"] == 12 and results["global_step"] == 3  # 24 images / (2 x 4)


# scripts/finetune.py, with the disk "full" for process 1 alone when it writes its random state
# into the second checkpoint (step 6: 3 steps an epoch): the other process's writes all succeed
FULL_FOR_PROCESS_1 = """
import errno, sys
import torch
from accelerate import PartialState
from hfkit.cli import run

real_save = torch.save
def save(obj, f, *args, **kwargs):
    if PartialState().process_index == 1 and str(f).endswith("step-00000006/random_states_1.pkl"):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    return real_save(obj, f, *args, **kwargs)
torch.save = save
run(["finetune", *sys.argv[1:]])
"""


@pytest.mark.skipif(os.cpu_count() < 2, reason="needs two cores for two processes")
def test_a_checkpoint_one_process_could_not_write_is_not_kept(tiny_overrides, tmp_path):
    """Every process writes its part of a checkpoint (its random state): when one cannot, all stop
    (none waits for ever at the next barrier), the incomplete folder is not renamed into place
    (it would resume inexactly) and the main process says which process failed and what is left."""
    script = tmp_path / "full_for_process_1.py"
    script.write_text(FULL_FOR_PROCESS_1)
    out = tmp_path / "run"
    proc = _launch(["--recipe", "hymenoptera", "--output-dir", str(out),
                    *_sets(tiny_overrides + ["train.epochs=3"])], processes=2, timeout=300,
                   script=str(script))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-4000:]
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000003"], text[-4000:]
    kept = {p.name for p in (checkpoints / "step-00000003").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= kept
    assert "process 1 could not write its part of checkpoint step-00000006" in text, text[-4000:]
    assert "step-00000003 is its last complete checkpoint" in text
    resumed = _launch(["--recipe", "hymenoptera", "--output-dir", str(out), "--resume", "latest",
                       *_sets(tiny_overrides + ["train.epochs=3"])], processes=2)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert json.loads((out / "all_results.json").read_text())["global_step"] == 9


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_overrides, tmp_path):
    """Ctrl-C mid-run: the run stops between steps, checkpoints, exits 130; --resume finishes."""
    import signal

    out = tmp_path / "run"
    args = [sys.executable, "-m", "hfkit.cli", "finetune", "--recipe", "hymenoptera",
            "--output-dir", str(out), *_sets(tiny_overrides + ["train.epochs=40"])]
    checkpoints = out / "checkpoints"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = []
    for line in proc.stdout:  # wait for the first epoch's metrics, then interrupt
        seen.append(line)
        if "eval_accuracy" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "--resume latest" in rest
    state = json.loads((find_checkpoint(out, "latest") / "trainer_state.json").read_text())
    assert 6 <= state["global_step"] < 240 and state["interrupted"] is False
    resumed = subprocess.run([*args, "--resume", "latest", "--max-steps", str(state["global_step"] + 6)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {checkpoints}" in resumed.stdout
    final = json.loads((find_checkpoint(out, "latest") / "trainer_state.json").read_text())
    assert final["global_step"] == state["global_step"] + 6


def test_ctrl_c_stops_several_processes_at_one_step(tmp_path):
    """Ctrl-C reaches every process of a 2-process CPU run (the terminal signals the whole group),
    each at another batch: they agree through accelerate's trigger, stop at the same optimizer
    step, save one checkpoint there and end; --resume latest can continue from it."""
    import signal
    import time

    from conftest import write_image_folder

    data = write_image_folder(tmp_path / "images", {"train": 12, "val": 6})
    out = tmp_path / "run"
    overrides = [f"data.path={data}", "model.pretrained=false", "model.name=resnet18", "data.image_size=32",
                 "data.num_workers=0", "train.batch_size=4", "train.epochs=200", "train.mixed_precision=no",
                 "eval.num_preview_images=0"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "scripts/finetune.py",
           "--recipe", "hymenoptera", "--output-dir", str(out), *_sets(overrides)]
    log = tmp_path / "log.txt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    with open(log, "w") as f:
        launcher = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "epoch 2  train_loss" not in log.read_text() and time.monotonic() < deadline:
            assert launcher.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Interrupted at step" in text, text[-3000:]
    state = json.loads((find_checkpoint(out, "latest") / "trainer_state.json").read_text())
    assert json.loads((out / "all_results.json").read_text())["interrupted"] is True
    step = int(re.search(r"Interrupted at step (\d+)", text).group(1))
    assert state["global_step"] == step and step % 10 == 0 and step < 200 * 3

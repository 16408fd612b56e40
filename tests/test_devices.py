"""CPU threads under a real `accelerate launch`: all cores unless the user chose a number."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_image_overrides, write_image_folder

import hfkit.devices
from hfkit.devices import training_precision, usable_cores


def _threads_of_a_launched_run(tmp_path, launcher_args: list[str], env_extra: dict[str, str]) -> int:
    data = write_image_folder(tmp_path / "images", {"train": 2, "val": 2})
    sets = [arg for o in tiny_image_overrides(data) for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", *launcher_args, "scripts/finetune.py",
           "--recipe", "hymenoptera", "--output-dir", str(tmp_path / "run"), "--max-steps", "1", *sets]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as in a fresh shell
    env.update(HF_HUB_OFFLINE="1", **env_extra)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"CPU: training on (\d+) threads", proc.stdout + proc.stderr)
    assert len(found) == 1, proc.stdout[-2000:]
    return int(found[0])


@pytest.mark.slow
def test_accelerate_launch_trains_on_every_core(tmp_path):
    if usable_cores() < 2:
        pytest.skip("one core: nothing to tell apart")
    assert _threads_of_a_launched_run(tmp_path, [], {}) == usable_cores()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_thread_count_the_user_chose_is_kept(tmp_path, how):
    if how == "flag":
        assert _threads_of_a_launched_run(tmp_path, ["--num_cpu_threads_per_process", "1"], {}) == 1
    else:
        assert _threads_of_a_launched_run(tmp_path, [], {"OMP_NUM_THREADS": "1"}) == 1


def test_bf16_falls_back_to_fp32_on_a_cpu_without_bf16_kernels(monkeypatch):
    monkeypatch.setattr(hfkit.devices, "cpu_has_fast_bf16", lambda: False)
    precision, why = training_precision("bf16", "cpu")
    assert precision == "no" and "fp32" in why
    assert training_precision("bf16", "cuda") == ("bf16", None)  # GPUs are left to accelerate
    assert training_precision("no", "cpu") == ("no", None)
    monkeypatch.setattr(hfkit.devices, "cpu_has_fast_bf16", lambda: True)
    assert training_precision("bf16", "cpu") == ("bf16", None)


def test_a_run_says_when_it_trains_in_another_precision(tiny_overrides, tmp_path, monkeypatch, capsys):
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    monkeypatch.setattr(hfkit.devices, "cpu_has_fast_bf16", lambda: False)
    recipe = load_recipe("hymenoptera", [*tiny_overrides, "train.mixed_precision=bf16", "train.epochs=1"],
                         output_dir=str(tmp_path))
    finetune(recipe, max_steps=1)
    assert "training in fp32 instead of the recipe's train.mixed_precision=bf16" in capsys.readouterr().out


def test_the_default_device_is_cuda_then_mps_then_cpu(monkeypatch):
    from hfkit.devices import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device().type == "mps"  # a Mac's GPU, where inference used to stay on the CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device().type == "cuda" and default_device("cpu").type == "cpu"


def test_fp16_on_a_cpu_falls_back_with_a_message(monkeypatch):
    monkeypatch.setattr(hfkit.devices, "cpu_has_fast_bf16", lambda: False)
    precision, why = training_precision("fp16", "cpu")
    assert precision == "no" and "fp16 autocast needs a GPU" in why
    monkeypatch.setattr(hfkit.devices, "cpu_has_fast_bf16", lambda: True)
    assert training_precision("fp16", "cpu")[0] == "bf16"


@pytest.mark.slow
def test_the_launchers_defaults_header_shows_once(tmp_path):
    """The README's `accelerate launch scripts/finetune.py ...` (no flags, no accelerate config)
    makes accelerate list the defaults it used, `--mixed_precision 'no'` among them. hfkit writes
    accelerate's basic config on that first run (without use_cpu, which would make accelerate list
    its CPU thread count on every launch), so later runs list nothing and still use every core."""
    data = write_image_folder(tmp_path / "images", {"train": 2, "val": 2})
    sets = [arg for o in tiny_image_overrides(data) for arg in ("--set", o)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    outputs = []
    for run in ("first", "second"):
        proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "scripts/finetune.py",
                               "--recipe", "hymenoptera", "--output-dir", str(tmp_path / run),
                               "--max-steps", "1", *sets], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout + proc.stderr)
    assert "values were not passed to `accelerate launch`" in outputs[0]
    assert "hfkit: wrote accelerate's default config" in outputs[0]
    assert (tmp_path / "hf" / "accelerate" / "default_config.yaml").is_file()
    for noise in ("values were not passed to `accelerate launch`", "wrote accelerate's"):
        assert noise not in outputs[1], outputs[1][-2000:]
    assert f"CPU: training on {usable_cores()} threads" in outputs[1]  # hfkit's choice, not the launcher's


def test_a_failed_launch_says_the_launchers_traceback_is_not_the_error(tmp_path):
    """A mistake under the README's command ends with accelerate's own CalledProcessError traceback,
    printed after hfkit's one-line error; hfkit says so before it, and not when `-q` leaves it out."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")  # the console script
    for quiet in ([], ["-q"]):
        cmd = [accelerate, "launch", *quiet, "scripts/finetune.py", "--recipe", "no-such-recipe"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        err = proc.stderr
        assert proc.returncode != 0 and "hfkit finetune: error: unknown recipe 'no-such-recipe'" in err
        note = "hfkit: accelerate launch now adds a traceback of its own"
        if quiet:
            assert note not in err and "CalledProcessError" not in err
        else:  # the note comes between the error and the traceback it announces
            assert err.index("unknown recipe") < err.index(note) < err.index("CalledProcessError"), err


@pytest.mark.parametrize("cmdline,reports", [
    (["python", "/venv/bin/accelerate", "launch", "scripts/finetune.py", "-q"], True),  # the script's -q
    (["python", "/venv/bin/accelerate", "launch", "--quiet", "scripts/finetune.py"], False),
    (["python", "-m", "accelerate.commands.launch", "--num_processes", "1", "scripts/finetune.py"], True),
    (["python", "-m", "accelerate.commands.launch", "-q", "-m", "hfkit.cli", "finetune"], False),
    (["/opt/accelerate/bin/python", "/opt/accelerate/bin/accelerate", "launch", "-q", "x.py"], False),
    (None, False),  # not launched
])
def test_which_launches_follow_a_failure_with_a_traceback(cmdline, reports, monkeypatch):
    monkeypatch.setattr(hfkit.devices, "_launcher_cmdline", lambda: cmdline)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert hfkit.devices.launcher_reports_failures() is reports
    monkeypatch.setenv("WORLD_SIZE", "2")  # torch's launcher: its own failure summary, -q or not
    assert hfkit.devices.launcher_reports_failures() is False

"""A full disk: warned of at the start, and when a write fails, a message that says what survives
and what to do; the partial copy's space is given back and the run resumes from its last checkpoint."""

from __future__ import annotations

import errno
import gc
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

import hfkit.finetune
from hfkit import diskspace
from hfkit.cli import main
from hfkit.finetune import finetune
from hfkit.recipes import load_recipe
from hfkit.training import checkpoints, find_checkpoint

TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # torch.save's


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("strategy", ["full", "linear-probe"])
def test_the_start_warns_when_the_checkpoints_will_not_fit_and_estimates_their_size(
        tiny_overrides, tmp_path, monkeypatch, capsys, strategy):
    """A linear probe's checkpoint is about half a full run's: SGD keeps momentum for the head only."""
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 3_000_000)
    out = tmp_path / "run"
    finetune(load_recipe("hymenoptera", [*tiny_overrides, "train.epochs=1", f"train.strategy={strategy}"],
                         output_dir=str(out)))
    printed = capsys.readouterr().out
    assert "the disk of" in printed and "has 3.0 MB free" in printed
    assert "train.keep_checkpoints=2 of them" in printed and "set train.keep_checkpoints=1" in printed
    estimate = float(re.search(r"checkpoints of about ([\d.]+) MB each", printed).group(1)) * 1e6
    real = _folder_bytes(find_checkpoint(out, "latest"))  # ResNet-18 + SGD momentum: ~90 MB; probe ~45
    assert 0.9 * real < estimate < 1.1 * real


def test_no_warning_when_there_is_room(tiny_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 10**15)
    finetune(load_recipe("hymenoptera", [*tiny_overrides, "train.epochs=1"], output_dir=str(tmp_path / "r")))
    assert "hfkit: warning: the disk of" not in capsys.readouterr().out


def _fail_second_checkpoint(monkeypatch, error: Exception, disk_full: bool):
    """save_state writes part of the second checkpoint, then fails like torch on a full disk;
    from then on the disk reports 1 KB free if ``disk_full``."""
    real_save, calls, full = Accelerator.save_state, [], []

    def save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1000)
            full.append(disk_full)
            raise error
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 1000 if any(full) else 10**15)


def test_a_full_disk_stops_the_run_with_a_message_and_it_resumes_from_the_last_checkpoint(
        tiny_overrides, tmp_path, monkeypatch, capsys):
    _fail_second_checkpoint(monkeypatch, RuntimeError(TORCH_FULL_DISK), disk_full=True)
    out = tmp_path / "run"
    code = main(["finetune", "--recipe", "hymenoptera", "--output-dir", str(out),
                 *[a for o in tiny_overrides for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"the disk of {out / 'checkpoints'} is full (1.0 KB free) while writing checkpoint "
            "step-00000012") in err
    assert "step-00000006 is its last complete checkpoint" in err and "--resume latest" in err
    assert TORCH_FULL_DISK in err  # what torch said is kept, after hfkit's words
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000006"]  # partial copy gone

    monkeypatch.undo()  # space freed: the run goes on from epoch 1's checkpoint and finishes
    finetune(load_recipe("hymenoptera", tiny_overrides, output_dir=str(out)), resume="latest")
    assert find_checkpoint(out, "latest").name == "step-00000012"


@pytest.mark.parametrize("disk_full", [False, True], ids=["room", "little-room"])
def test_an_error_that_is_not_a_full_disk_is_left_as_it_is(tiny_overrides, tmp_path, monkeypatch, disk_full):
    """Also while little space is left: only torch's writer error or an OSError is taken for a
    full disk that does not say so."""
    _fail_second_checkpoint(monkeypatch, RuntimeError("something else"), disk_full=disk_full)
    with pytest.raises(RuntimeError, match="^something else$") as caught:
        finetune(load_recipe("hymenoptera", tiny_overrides, output_dir=str(tmp_path / "run")))
    assert not isinstance(caught.value, diskspace.DiskFullError)


@pytest.fixture
def small_disk(tmp_path):
    """A real 400 MB file system (tmpfs), to be filled up; needs the right to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    gc.collect()  # a failed torch.save's writer, held by a caught traceback, keeps its file open
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` with one file, then shorten it so ``leave_bytes`` stay free."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    with open(filler, "r+b") as f:
        f.truncate(max(0, filler.stat().st_size - leave_bytes))
    return filler


def test_a_full_disk_on_resume_says_free_space_and_the_run_goes_on_once_there_is(tiny_overrides, small_disk):
    """1 MB left: the resumed run's first write (the best model, through safetensors) fails."""
    out = small_disk / "run"
    overrides = tiny_overrides + ["train.keep_checkpoints=5"]
    finetune(load_recipe("hymenoptera", overrides, output_dir=str(out)), max_steps=2)
    filler = _fill(small_disk, leave_bytes=1 << 20)
    # the first write of the resumed run fails: the best model (safetensors) or a checkpoint
    with pytest.raises(diskspace.DiskFullError, match=r"is full \(1.0 MB free\) while writing (the best "
                       r"model|checkpoint step-\d+).*step-00000002 is its last complete checkpoint"
                       r".*--resume latest"):
        finetune(load_recipe("hymenoptera", overrides, output_dir=str(out)), resume="latest")
    assert [p.name for p in checkpoints(out)] == ["step-00000002"]
    assert not list(out.rglob(".tmp-*"))  # partial copies are removed, giving their space back
    filler.unlink()
    assert finetune(load_recipe("hymenoptera", overrides, output_dir=str(out)), resume="latest")[
        "global_step"] == 12


def test_torchs_own_full_disk_error_is_recognised(tiny_overrides, small_disk):
    """Room for epoch 1's best ResNet-18 (45 MB) and checkpoint (90 MB), not for epoch 2's
    checkpoint: torch.save's writer fails with words that do not say the disk is full."""
    out = small_disk / "run"
    _fill(small_disk, leave_bytes=180 << 20)
    with pytest.raises(diskspace.DiskFullError) as caught:
        finetune(load_recipe("hymenoptera", tiny_overrides, output_dir=str(out)))
    message = str(caught.value)
    assert f"the disk of {out / 'checkpoints'} is full" in message and "checkpoint step-00000012" in message
    assert "step-00000006 is its last complete checkpoint" in message
    assert "inline_container.cc" in message  # torch's words, which alone would not say it
    assert not list(out.rglob(".tmp-*"))
    assert [p.name for p in checkpoints(out)] == ["step-00000006"]


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, ... })"),
    RuntimeError("failed to write: os error 28"),
    _wrapped(OSError(errno.ENOSPC, "No space left on device"), RuntimeError("could not save")),
], ids=["enospc", "quota", "safetensors", "rust", "cause"])
def test_the_ways_a_full_disk_is_said_are_recognised(error):
    assert diskspace.says_disk_full(error)


def test_other_errors_are_not_taken_for_a_full_disk():
    assert not diskspace.says_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not diskspace.says_disk_full(RuntimeError(TORCH_FULL_DISK))  # says nothing: judged by free space
    looped = RuntimeError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped  # a cause chain that loops ends too
    assert not diskspace.says_disk_full(looped)


def test_torchs_words_count_as_a_full_disk_only_when_little_is_free(tmp_path, monkeypatch):
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 1000)
    full = diskspace.disk_full_error(tmp_path, "checkpoint step-1", 10**6, RuntimeError(TORCH_FULL_DISK),
                                     "Then.")
    assert isinstance(full, diskspace.DiskFullError)
    assert str(full).startswith(f"the disk of {tmp_path} is full (1.0 KB free) while writing checkpoint "
                                "step-1 (about 1.0 MB). Then. (The write failed with: [enforce fail")
    assert diskspace.disk_full_error(tmp_path, "x", 10**6, ValueError("bad value"), "Then.") is None
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert diskspace.disk_full_error(tmp_path, "x", 10**6, denied, "Then.") is None
    assert diskspace.disk_full_error(tmp_path, "x", 10**6, OSError("short write"), "Then.") is not None
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 10**12)
    assert diskspace.disk_full_error(tmp_path, "x", 10**6, RuntimeError(TORCH_FULL_DISK), "Then.") is None


def test_a_long_error_is_cut_to_its_first_line(tmp_path):
    error = OSError(errno.ENOSPC, "No space left on device: " + "x" * 500 + "\nsecond line")
    message = str(diskspace.disk_full_error(tmp_path, "x", 0, error, "Then."))
    assert "second line" not in message and message.endswith(" ...)") and len(message) < 400


def test_a_full_disk_outside_the_checkpoints_names_that_disk(tiny_overrides, tmp_path, monkeypatch):
    """A data cache on another disk fills up before the first checkpoint: the error names the
    cache's folder, and says no checkpoint was saved (not that the saved ones are complete)."""
    cache = tmp_path / "cache" / "train.arrow"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(cache))
    monkeypatch.setattr(hfkit.finetune, "train", full)
    with pytest.raises(diskspace.DiskFullError) as caught:
        finetune(load_recipe("hymenoptera", tiny_overrides, output_dir=str(tmp_path / "run")))
    assert str(caught.value).startswith(f"the disk of {cache.parent} is full")
    assert "No checkpoint was saved yet: free some space and start the run again." in str(caught.value)

    def other(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", str(cache))
    monkeypatch.setattr(hfkit.finetune, "train", other)
    with pytest.raises(PermissionError):
        finetune(load_recipe("hymenoptera", tiny_overrides, output_dir=str(tmp_path / "run")))


class _Net(torch.nn.Module):
    """~1.1M parameters, so the checkpoint's fixed part (RNG states, scheduler) is small beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                                        torch.nn.Linear(1024, 512))
        self.head = torch.nn.Linear(512, 10)

    def forward(self, x):
        return self.head(self.body(x))


def _saved_checkpoint(model, optimizer, ema: bool, folder: Path) -> int:
    from timm.utils import ModelEmaV3

    acc = Accelerator(cpu=True)
    model, optimizer = acc.prepare(model, optimizer)
    if ema:
        acc.register_for_checkpointing(ModelEmaV3(model, decay=0.9))
    for _ in range(6):  # Adam's state exists from the first step, Lookahead's slow weights from the 6th
        model(torch.randn(4, 512)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    acc.save_state(str(folder))
    return diskspace.folder_bytes(folder)


@pytest.mark.parametrize("case", ["adamw", "sgd-ema", "amsgrad", "linear-probe", "lora", "lookahead"])
def test_the_checkpoint_estimate_is_within_a_tenth_of_what_save_state_writes(case, tmp_path):
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model = _Net()
    if case == "linear-probe":
        model.body.requires_grad_(False)
    if case == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules=["body.0", "body.2"],
                                                 modules_to_save=["head"]))
    opt = {"sgd-ema": "sgd", "lookahead": "lookahead_adamw"}.get(case, "adamw")
    optimizer = create_optimizer_v2(model, opt, lr=1e-3, momentum=0.9,
                                    **({"amsgrad": True} if case == "amsgrad" else {}))
    estimate = diskspace.checkpoint_bytes(model, optimizer, ema=case == "sgd-ema", unfreezes=False)
    real = _saved_checkpoint(model, optimizer, case == "sgd-ema", tmp_path / "ckpt")
    assert 0.9 * real < estimate < 1.1 * real, (estimate, real)


def test_a_lora_best_model_is_its_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_Net(), LoraConfig(r=8, target_modules=["body.0", "body.2"],
                                              modules_to_save=["head"]))
    model.save_pretrained(tmp_path)
    real = (tmp_path / "adapter_model.safetensors").stat().st_size
    assert 0.9 * real < diskspace.model_bytes(model) < 1.1 * real

"""A full disk: warned of at the start, and when a write fails, a message that says what survives
and what to do; the partial copy's space is given back and the run resumes from its last checkpoint."""

from __future__ import annotations

import gc
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from accelerate import Accelerator

from hfkit import diskspace
from hfkit.cli import main
from hfkit.finetune import finetune
from hfkit.recipes import load_recipe
from hfkit.training import checkpoints, find_checkpoint

TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"  # torch.save's


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_start_warns_when_the_checkpoints_will_not_fit_and_estimates_their_size(
        tiny_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 3_000_000)
    out = tmp_path / "run"
    finetune(load_recipe("hymenoptera", [*tiny_overrides, "train.epochs=1"], output_dir=str(out)))
    printed = capsys.readouterr().out
    assert "the disk of" in printed and "has 3.0 MB free" in printed
    assert "train.keep_checkpoints=2 of them" in printed and "set train.keep_checkpoints=1" in printed
    estimate = float(re.search(r"checkpoints of about ([\d.]+) MB each", printed).group(1)) * 1e6
    real = _folder_bytes(find_checkpoint(out, "latest"))  # ResNet-18 + SGD momentum: ~90 MB
    assert 0.9 * real < estimate < 1.1 * real


def test_no_warning_when_there_is_room(tiny_overrides, tmp_path, capsys):
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

    real_free = diskspace.free_bytes
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    monkeypatch.setattr(diskspace, "free_bytes", lambda folder: 1000 if any(full) else real_free(folder))


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


def test_an_error_that_is_not_a_full_disk_is_left_as_it_is(tiny_overrides, tmp_path, monkeypatch):
    _fail_second_checkpoint(monkeypatch, RuntimeError("something else"), disk_full=False)
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
    with pytest.raises(diskspace.DiskFullError, match=r"is full \(1.0 MB free\) while writing the best "
                       r"model.*step-00000002 is its last complete checkpoint.*--resume latest"):
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

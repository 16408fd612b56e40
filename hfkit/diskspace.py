"""Disk space for a run's checkpoints: a warning at the start when they will not fit, and an error
that says so when a write fails on a full disk.

torch's own error for a full disk reads ``[enforce fail at inline_container.cc:672] . unexpected
pos 576 vs 534``; safetensors' says "No space left on device" inside a serialisation error. The
checkpoint code gives back the space of the partial copy and raises :class:`DiskFullError`
instead, which names the last complete checkpoint and what to do.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch

__all__ = ["DiskFullError", "checkpoint_bytes", "disk_full_error", "free_bytes", "human_bytes",
           "model_bytes", "says_disk_full", "space_warning"]


class DiskFullError(RuntimeError):
    """A write failed because the disk is full (a RuntimeError: the CLI prints it as a message)."""


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s weights and buffers as saved (what the best model takes on disk)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _state_slots(optimizer: torch.optim.Optimizer) -> int:
    """Tensors the optimizer keeps per parameter: SGD one momentum buffer (none without momentum),
    Lion one, the Adam family (and anything unknown, to be safe) two."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the real one
    name = type(optimizer).__name__.lower()
    if "sgd" in name or "lars" in name:
        return int(any(g.get("momentum", 0) for g in optimizer.param_groups))
    return 1 if "lion" in name else 2


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: bool) -> int:
    """About what one ``save_state`` writes: the model, the optimizer's state for every parameter
    it holds (frozen ones too: a strategy may unfreeze them) and the EMA copy if there is one.
    Estimated before the first step, when the optimizer has no state yet."""
    params = sum(p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"])
    weights = model_bytes(model)
    return weights * (2 if ema else 1) + _state_slots(optimizer) * params


def space_warning(out: Path, checkpoint: int, keep: int, existing: int, best_model: int) -> str | None:
    """A warning when the checkpoints of a run in ``out`` will not fit on its disk, else None.

    At most ``keep`` checkpoints stay, and one more while it is written (the oldest goes only
    after the new one is complete); the best model is written beside the old one, then moved.
    """
    need = max(keep + 1 - existing, 1) * checkpoint + 2 * best_model
    free = free_bytes(out)
    if free >= need:
        return None
    fewer = " or set train.keep_checkpoints=1" if keep > 1 else ""
    return (f"hfkit: warning: the disk of {out} has {human_bytes(free)} free, and this run needs about "
            f"{human_bytes(need)} (checkpoints of about {human_bytes(checkpoint)} each: "
            f"train.keep_checkpoints={keep} of them and one more while it is written, and the "
            f"best model). When the disk fills, the run stops at that checkpoint and keeps the last "
            f"complete one: free some space first{fewer}.")


def says_disk_full(error: BaseException | None) -> bool:
    """ENOSPC, also when safetensors or torch wrapped it in an error of their own (torch's own
    writer does not say it: see :func:`disk_full_error`)."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or any(
                s in str(error) for s in ("No space left on device", "StorageFull", "os error 28")):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(folder: Path, what: str, need: int, error: BaseException,
                    then: str) -> DiskFullError | None:
    """The error to raise instead of ``error`` (a write of ``what`` into ``folder`` failed) if the
    disk is full: the error says so, or fewer than ``need`` bytes are free (torch's error for a full
    disk does not say so); None otherwise.
    ``then`` says what survives and how to go on."""
    free = free_bytes(folder)
    if not (says_disk_full(error) or free < need):
        return None
    size = f" (about {human_bytes(need)})" if need else ""
    return DiskFullError(f"the disk of {folder} is full ({human_bytes(free)} free) while writing "
                         f"{what}{size}. {then} (The write failed with: {error})")

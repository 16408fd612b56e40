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

__all__ = ["DiskFullError", "checkpoint_bytes", "disk_full_error", "failed_folder", "folder_bytes",
           "free_bytes", "human_bytes", "model_bytes", "says_disk_full", "space_warning"]


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
    """Bytes of ``model``'s weights and buffers as saved (what the best model takes on disk); for a
    PEFT model, what its adapter save writes: the trainable weights (adapter, new head)."""
    if hasattr(model, "peft_config"):
        return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return _state_dict_bytes(model)


def _state_dict_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in ``folder`` (a checkpoint already written: the size of the next)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def _state_slots(optimizer: torch.optim.Optimizer) -> int:
    """Tensors the optimizer keeps per parameter: SGD one momentum buffer (none without momentum),
    Lion one, MADGRAD three, Adan four, the Adam family two (three with amsgrad), anything unknown
    two; timm's Lookahead one more (its slow weights)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the real one
    lookahead = getattr(optimizer, "_base_optimizer", None)
    if lookahead is not None:
        return 1 + _state_slots(lookahead)
    name, groups = type(optimizer).__name__.lower(), optimizer.param_groups
    if "sgd" in name or "lars" in name:
        return int(any(g.get("momentum", 0) for g in groups))
    for kind, slots in (("lion", 1), ("madgrad", 3), ("adan", 4)):
        if kind in name:
            return slots
    return 2 + int(any(g.get("amsgrad", False) for g in groups))


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: bool,
                     unfreezes: bool) -> int:
    """About what one ``save_state`` writes: the whole model, the optimizer's state for the
    parameters that train (all it holds if a strategy ``unfreezes`` frozen ones later; an
    optimizer keeps no state for a parameter that never had a gradient) and the EMA copy if any.
    Estimated from the parameters, not from the optimizer's state (empty before the first step)."""
    params = sum(p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"]
                 if unfreezes or p.requires_grad)
    return _state_dict_bytes(model) * (2 if ema else 1) + _state_slots(optimizer) * params


def space_warning(out: Path, checkpoint: int, keep: int, existing: int, best_model: int,
                  has_best: bool) -> str | None:
    """A warning when the checkpoints of a run in ``out`` will not fit on its disk, else None.

    At most ``keep`` checkpoints stay, and one more while it is written (the oldest goes only
    after the new one is complete); the best model is written beside the old one (``has_best``:
    one is there already), then moved.
    """
    need = max(keep + 1 - existing, 1) * checkpoint + (1 if has_best else 2) * best_model
    free = free_bytes(out)
    if free >= need:
        return None
    fewer = " or set train.keep_checkpoints=1" if keep > 1 else ""
    return (f"hfkit: warning: the disk of {out} has {human_bytes(free)} free, and this run needs about "
            f"{human_bytes(need)} (checkpoints of about {human_bytes(checkpoint)} each: "
            f"train.keep_checkpoints={keep} of them and one more while it is written, and the "
            f"best model). When the disk fills, the run stops at that checkpoint and keeps the last "
            f"complete one: free some space first{fewer}.")


# what torch's zip writer says of a short write, without the errno (see disk_full_error)
_TORCH_WRITER = ("unexpected pos", "inline_container", "PytorchStreamWriter failed", "file write failed")


def _chain(error: BaseException | None):
    """``error`` and its causes, each once (a cause chain can loop)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def says_disk_full(error: BaseException | None) -> bool:
    """ENOSPC (or a quota's EDQUOT), also when safetensors or torch wrapped it in an error of
    their own (torch's own writer does not say it: see :func:`disk_full_error`)."""
    return any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        s in str(e) for s in ("No space left on device", "StorageFull", "os error 28",
                              "Disk quota exceeded")) for e in _chain(error))


def failed_folder(error: BaseException) -> Path | None:
    """The folder of the file a failed write names (its OSError's filename), if one does."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.filename:
            return Path(e.filename).parent
    return None


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def disk_full_error(folder: Path, what: str, need: int, error: BaseException,
                    then: str) -> DiskFullError | None:
    """The error to raise instead of ``error`` (a write of ``what`` into ``folder`` failed) if the
    disk is full: the error says so, or it is a bare OSError or torch's writer error (which do not
    say so) while fewer than ``need`` bytes are free; None otherwise.
    ``then`` says what survives and how to go on."""
    try:
        free: int | None = free_bytes(folder)
    except OSError:  # the folder's disk cannot be asked: judge by the error alone
        free = None
    # an OSError without an errno, or one of a write that found no room (not a PermissionError)
    no_room = isinstance(error, OSError) and error.errno in (None, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    torch_or_os = no_room or (isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_WRITER))
    if not (says_disk_full(error) or (torch_or_os and free is not None and free < need)):
        return None
    size = f" (about {human_bytes(need)})" if need else ""
    left = f" ({human_bytes(free)} free)" if free is not None else ""
    return DiskFullError(f"the disk of {folder} is full{left} while writing {what}{size}. {then} "
                         f"(The write failed with: {_first_line(error)})")

"""What the hardware affords a run: CPU threads, the autocast precision, accelerate's state.

``accelerate launch`` sets ``OMP_NUM_THREADS=1`` for a single process unless told otherwise, so
the README's own command would train on one core of a laptop. hfkit undoes that default, and
only that: a thread count the user chose (``--num_cpu_threads_per_process N``, or
``OMP_NUM_THREADS`` in the shell that ran the launcher) is kept. Likewise a recipe's bf16 is
kept wherever the hardware runs it, and replaced by fp32 on CPUs that would only emulate it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
from pathlib import Path

import psutil
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

# set in the environment of the processes it starts by `accelerate launch`, never by hand
LAUNCHER_MARK = "ACCELERATE_DYNAMO_BACKEND"


def usable_cores() -> int:
    """Physical cores this process may run on (what plain ``python`` gives torch by default)."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return max(1, min(physical, len(os.sched_getaffinity(0))))
    return physical


def _launcher() -> psutil.Process | None:
    """The ``accelerate launch`` process that started this one, if one did."""
    if LAUNCHER_MARK not in os.environ:
        return None
    try:
        parent = psutil.Process().parent()
        return parent if parent is not None and any("accelerate" in p for p in parent.cmdline()[:3]) else None
    except psutil.Error:  # cannot see it: behave as if started by hand
        return None


def stderr_to_stdout(fd: int = 2, null: bool = False) -> None:
    """Point file descriptor ``fd`` (stderr) where stdout goes, the terminal or log the user
    reads; at /dev/null if ``null`` or when there is no stdout file. For a process whose stderr
    pipe to its launcher broke."""
    if not null:
        try:
            os.dup2(sys.stdout.fileno(), fd)
            return
        except (AttributeError, OSError, ValueError):  # no stdout file: replaced, closed
            pass
    target = os.open(os.devnull, os.O_WRONLY)
    os.dup2(target, fd)
    os.close(target)


class LauncherStderr:
    """``sys.stderr`` for a process whose stderr is a pipe to ``accelerate launch`` (accelerate
    1.16 tees it). When the launcher is killed (``kill -9``, the OOM killer) that pipe breaks, and
    the next progress-bar update would end the run with a BrokenPipeError before it could save a
    checkpoint; here the output moves to stdout instead (to /dev/null if stdout is a broken pipe
    too), and every later write with it."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:  # a line still buffered is written by the reroute's flush; a
            # write larger than the buffer failed at once and is lost (one progress line)
            self._reroute()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._reroute()

    def _reroute(self) -> None:
        fd = self.stream.fileno()
        stderr_to_stdout(fd)
        try:
            self.stream.flush()
        except OSError:  # stdout is gone as well
            stderr_to_stdout(fd, null=True)
            with contextlib.suppress(OSError):
                self.stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, ...: the real stream's
        return getattr(self.stream, name)


def stderr_is_a_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(2).st_mode)
    except OSError:
        return False


# accelerate 1.16's launcher passes a Ctrl-C or SIGTERM on to its one training process and kills
# it this many seconds later (launch.py, _terminate_process_tree); older ones pass nothing on.
# Several processes run under torchrun's elastic agent, which gives its workers 30 s.
LAUNCHER_KILL_SECONDS = 5.0
TORCHRUN_KILL_SECONDS = 30.0


def launcher_kill_seconds() -> float | None:
    """How long ``accelerate launch`` lets this process stop after passing a signal on, before it
    kills it; None when no launcher started it, or one that does not kill it (before 1.16)."""
    if launcher_pid() is None:
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return TORCHRUN_KILL_SECONDS
    import accelerate
    from packaging.version import Version

    return LAUNCHER_KILL_SECONDS if Version(accelerate.__version__) >= Version("1.16") else None


def note_launcher() -> None:
    """As a run starts: note the ``accelerate launch`` that started it (once the launcher is dead,
    this process has another parent), and make stderr outlive that launcher's pipe."""
    if launcher_pid() is not None and stderr_is_a_pipe() and not isinstance(sys.stderr, LauncherStderr):
        sys.stderr = LauncherStderr(sys.stderr)  # for the whole process: its last messages too


@functools.cache  # asked once early: after the launcher dies, this process has another parent
def launcher_pid() -> int | None:
    launcher = _launcher()
    return None if launcher is None else launcher.pid


def _launcher_cmdline() -> list[str] | None:
    """The command line of the ``accelerate launch`` that started this process (None: none did,
    or it cannot be seen)."""
    launcher = _launcher()
    try:
        return launcher.cmdline() if launcher is not None else None
    except psutil.Error:
        return None


def launcher_requested_processes() -> int | None:
    """``--num_processes N`` as given to the ``accelerate launch`` that started this process."""
    cmdline = _launcher_cmdline() or []
    for i, part in enumerate(cmdline):
        for flag in ("--num_processes", "--num-processes"):
            value = part.removeprefix(flag + "=") if part.startswith(flag + "=") else (
                cmdline[i + 1] if part == flag and i + 1 < len(cmdline) else None)
            if value is not None and value.isdigit():
                return int(value)
    return None


def launcher_reports_failures() -> bool:
    """Whether the ``accelerate launch`` that started this process, alone, will follow a failed exit
    with a CalledProcessError traceback of its own: it does unless given ``-q``/``--quiet``. (With
    several processes, torch's launcher prints its own summary of a failure, ``-q`` or not.)"""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    cmdline = _launcher_cmdline() or []
    # the launcher's own options: after `accelerate launch` (or `python -m
    # accelerate.commands.launch`), up to the script or `-m module`
    start = next((i + 1 for i, part in enumerate(cmdline)
                  if Path(part).name == "accelerate" or part == "accelerate.commands.launch"), None)
    if start is None:
        return False
    start += cmdline[start:start + 1] == ["launch"]
    options = []
    for part in cmdline[start:]:
        if part.endswith(".py") or part in ("-m", "--module"):
            break
        options.append(part)
    return not {"-q", "--quiet"} & set(options)


def write_launcher_defaults() -> str | None:
    """``accelerate launch`` without a config file lists, on every run, the defaults it used
    (``--num_processes``, ``--mixed_precision 'no'``, ...), which reads as if the recipe's precision
    were ignored. Launched that way on a machine with at most one GPU, write accelerate's basic
    config (what ``accelerate config default`` writes: one process), so later launches are quiet
    and run the same. Returns the line to print, or None when nothing was written."""
    cmdline = _launcher_cmdline()
    if not cmdline or any(p.startswith(("--num_processes", "--config_file")) for p in cmdline):
        return None
    if torch.cuda.device_count() > 1:  # the basic config would make every later launch multi-GPU
        return None
    from accelerate.commands.config.config_args import default_config_file
    from accelerate.utils import write_basic_config

    if os.path.exists(default_config_file):
        return None
    write_basic_config(mixed_precision="no", save_location=default_config_file)
    # use_cpu (what the basic config says on a machine without a GPU) makes every launch list the
    # thread count it picked as a default used. Without it accelerate still runs on the CPU there,
    # and hfkit sets the threads itself (usable cores unless the user chose), so launches are quiet.
    config = json.loads(Path(default_config_file).read_text(encoding="utf-8"))
    if config.get("use_cpu"):
        config["use_cpu"] = False
        Path(default_config_file).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return (f"hfkit: wrote accelerate's default config to {default_config_file} (as `accelerate config "
            "default` does), so `accelerate launch` stops listing the defaults it used; the precision "
            "still comes from the recipe (train.mixed_precision)")


def launcher_default_threads() -> bool:
    """True when ``OMP_NUM_THREADS=1`` is accelerate's default rather than the user's choice.

    The launcher process still shows what the user gave it: its command line (the
    ``--num_cpu_threads_per_process`` flag) and its environment (an ``OMP_NUM_THREADS`` of the user's).
    """
    launcher = _launcher() if os.environ.get("OMP_NUM_THREADS") == "1" else None
    if launcher is None:
        return False
    try:
        cmdline, env = launcher.cmdline(), launcher.environ()
    except psutil.Error:  # cannot see the launcher: keep what we were given
        return False
    chosen = any(part.startswith("--num_cpu_threads_per_process") for part in cmdline)
    return not chosen and "OMP_NUM_THREADS" not in env


def set_cpu_threads(num_processes: int) -> str:
    """Use every core for one process training on the CPU when only the launcher limited it;
    returns the line to print."""
    if num_processes == 1 and launcher_default_threads() and usable_cores() > 1:
        torch.set_num_threads(usable_cores())
        return (f"CPU: training on {torch.get_num_threads()} threads (accelerate launch had set "
                "OMP_NUM_THREADS=1; choose with --num_cpu_threads_per_process N)")
    return f"CPU: training on {torch.get_num_threads()} threads"


def default_device(device: str | None = None) -> torch.device:
    """``device`` if given, else a CUDA GPU, else Apple's MPS (a Mac's GPU), else the CPU: what
    accelerate picks for training, so inference and demos run where training ran."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def onnx_device(device: str | None) -> torch.device:
    """The CPU, where an ONNX export runs (onnxruntime's CPU provider); any other ``device`` is an error."""
    if device not in (None, "cpu"):
        raise ValueError(f"an ONNX export runs on the CPU (onnxruntime), not on '{device}'")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512 or AVX512-BF16/AMX on x86, BF16 on Arm).

    Without them bf16 autocast is emulated: ResNet-18 trained 10x slower than in fp32 on an
    AVX2-only CPU, so a recipe's bf16 would turn a minutes-long CPU run into an hour.
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_precision(requested: str, device_type: str) -> tuple[str, str | None]:
    """The autocast precision to train with, and the line to print when it is not the recipe's."""
    if requested == "bf16" and device_type == "cpu" and not cpu_has_fast_bf16():
        return "no", ("CPU: no bf16 hardware support (AVX512 or Arm BF16) on this CPU, where bf16 "
                      "autocast runs several times slower than fp32: training in fp32 instead of the "
                      "recipe's train.mixed_precision=bf16")
    if requested == "fp16" and device_type == "cpu":  # accelerate refuses fp16 autocast on a CPU
        return ("bf16", "CPU: fp16 autocast needs a GPU: training in bf16 instead of the recipe's "
                "train.mixed_precision=fp16") if cpu_has_fast_bf16() else (
                "no", "CPU: fp16 autocast needs a GPU: training in fp32 instead of the recipe's "
                "train.mixed_precision=fp16")
    if (requested == "bf16" and device_type == "cuda" and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        return "fp16", ("GPU: this GPU has no bf16 (it is older than Ampere): training in fp16 "
                        "instead of the recipe's train.mixed_precision=bf16")
    return requested, None


def process_state() -> PartialState:
    """accelerate's state of this process, made the way ``Accelerator`` makes it: the first one
    made is the one every later call gets, and a bare ``PartialState()`` would ignore
    ``ACCELERATE_USE_CPU`` and leave CPU processes launched together each on its own."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))

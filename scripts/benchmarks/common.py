"""What every benchmark here needs: time a command as a whole process, as users run it.

Each side of a comparison is one process (start-up included), run in a fresh environment without
``OMP_NUM_THREADS`` (as from a fresh shell), and reports what else loaded the machine meanwhile.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no thread count set, the Hub offline."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


def hfkit_command(recipe: str, output_dir: Path, overrides: list[str]) -> list[str]:
    """The README's command: ``accelerate launch scripts/finetune.py --recipe ... --set ...``."""
    accelerate = Path(sys.executable).with_name("accelerate")  # the console script beside python
    launch = [str(accelerate), "launch"] if accelerate.exists() else [
        sys.executable, "-m", "accelerate.commands.launch"]
    return [*launch, "scripts/finetune.py", "--recipe", recipe, "--output-dir", str(output_dir),
            *[arg for o in overrides for arg in ("--set", o)]]


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds of this process and its reaped children)."""
    import resource

    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    mine = sum(getattr(resource.getrusage(who), k) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for k in ("ru_utime", "ru_stime"))
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK"), mine


# runs argv[1:] and reports the peak resident memory of its process tree (the largest process: what
# the launcher and the training process each held at most; RUSAGE_CHILDREN counts waited-for
# grandchildren too) on its last stderr line
PEAK_RSS_WRAPPER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
                    "file=sys.stderr); sys.exit(code)")


def run_process(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600,
                peak_rss: bool = False) -> dict:
    """Run ``cmd`` from the repository root; wall seconds, the CPU seconds it used, the share of the
    machine other processes used meanwhile (a few percent is quiet), and its output. With
    ``peak_rss``, also ``peak_rss_mib``: the most memory one of its processes held (Linux, macOS)."""
    if peak_rss:
        cmd = [sys.executable, "-c", PEAK_RSS_WRAPPER, *cmd]
    before, start = cpu_seconds(), time.perf_counter()
    # its own process group: a benchmark stopped by Ctrl-C or a timeout stops what it launched too
    child = subprocess.Popen(cmd, cwd=REPO, env=env or clean_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except BaseException:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    wall = time.perf_counter() - start
    after = cpu_seconds()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    row = {"wall": wall, "stdout": proc.stdout, "stderr": proc.stderr, "cpu_seconds": None,
           "other_cpu": None}
    if peak_rss:
        kib = int(re.findall(r"^peak-rss-kib (\d+)$", proc.stderr, re.M)[-1])
        row["peak_rss_mib"] = kib / (1024 * 1024 if sys.platform == "darwin" else 1024)  # macOS: bytes
    if before is not None and after is not None:
        own = after[1] - before[1]
        row["cpu_seconds"] = own
        row["other_cpu"] = max((after[0] - before[0]) - own, 0.0) / (wall * (os.cpu_count() or 1))
    return row


def run_recipe(recipe: str, overrides: list[str], out: Path | None = None, peak_rss: bool = False) -> dict:
    """The README's command as a process (``run_process``), with what its run folder reports:
    ``results`` (all_results.json), ``history`` (per-epoch records of its last checkpoint) and
    ``threads`` (the CPU thread count it printed, or None). ``out``: the output folder (default:
    a temporary one, removed afterwards)."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix=f"{recipe}-bench-") as tmp:
            return run_recipe(recipe, overrides, Path(tmp) / "run", peak_rss)
    row = run_process(hfkit_command(recipe, out, overrides), peak_rss=peak_rss)
    last = sorted((out / "checkpoints").glob("step-*"))[-1]
    threads = re.search(r"CPU: training on (\d+) threads", row["stdout"])
    return {**row, "results": json.loads((out / "all_results.json").read_text()),
            "history": json.loads((last / "trainer_state.json").read_text())["history"],
            "threads": int(threads[1]) if threads else None}


def last_json_line(text: str) -> dict:
    """The last line of ``text`` that is a JSON object (how worker processes report)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON result in the output:\n{text[-2000:]}")


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def machine_line() -> str:
    """Date, CPU model and core count, load average, torch version (and GPU when there is one)."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    bf16 = "bf16 kernels" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no bf16 kernels"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{datetime.datetime.now().isoformat(timespec='minutes')}; {cpu} "
            f"({torch.backends.cpu.get_cpu_capability()}, {bf16}), {os.cpu_count()} logical CPUs{gpu}; "
            f"load average {load}; torch {torch.__version__}")

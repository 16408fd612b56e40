"""A data set given as an archive: hfkit's one-pass unpacking against the former check + datasets' extraction.

    python scripts/benchmarks/archives.py                       # ../shared/data/tiny-imagenet-200
    python scripts/benchmarks/archives.py --data ../shared/data/hymenoptera_data --repeat 5

First (not timed) the folder is packed into a ``.tar.gz`` in a temporary folder. Then, alternating
the two sides ``--repeat`` times, each in a fresh ``datasets`` cache, two processes per side time
``load_splits(archive)`` (what every image, text or QA run does with ``data.path=x.tar.gz``):
the first run (unpacking included) and a later run (the copy is reused). Sides:

- **former**: hfkit up to 2026-12-03: ``refuse_unsafe_tar`` read the whole archive to judge its
  members, then ``datasets.DownloadManager.extract`` unpacked it (and on every later run the
  check read the archive again before datasets found its copy);
- **hfkit**: ``hfkit.data.archives.unpack``: judges each member as it unpacks it, once.

Each row: mean wall seconds of the whole process (start-up included) and of the ``load_splits``
call inside it. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clean_env, machine_line, run_process  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# the process each row runs: argv[1] the side, argv[2] the archive; prints {"seconds": ...}
WORKER = r'''
import json, sys, tarfile, tempfile, time
from pathlib import Path
import datasets
from hfkit.data import sources

def former(archive):  # hfkit's code before hfkit.data.archives
    root = Path(tempfile.gettempdir()) / "hfkit-extract"
    with tarfile.open(archive) as tar:
        for member in tar:
            tarfile.data_filter(member, str(root))
    manager = sources._download_manager(Path(datasets.config.HF_DATASETS_CACHE))
    return sources.load_splits(str(sources.dataset_root(Path(manager.extract(str(archive))))))

start = time.perf_counter()
splits = former(sys.argv[2]) if sys.argv[1] == "former" else sources.load_splits(sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rows": {k: len(v) for k, v in splits.items()}}))
'''


def one_side(side: str, archive: Path, cache: Path) -> list[dict]:
    """The first and a later run of ``side`` in the fresh ``datasets`` cache ``cache``."""
    env = clean_env(HF_DATASETS_CACHE=str(cache), TQDM_DISABLE="1")
    rows = []
    for _ in ("first", "later"):
        row = run_process([sys.executable, "-c", WORKER, side, str(archive)], env=env)
        rows.append({"wall": row["wall"], **json.loads(row["stdout"].strip().splitlines()[-1])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/tiny-imagenet-200")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archives-bench-") as tmp:
        archive = Path(tmp) / f"{args.data.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(args.data, arcname=args.data.name)
        files = sum(1 for p in args.data.rglob("*") if p.is_file())
        runs: dict[str, list[list[dict]]] = {"former": [], "hfkit": []}
        for i in range(args.repeat):
            for side in runs:
                runs[side].append(one_side(side, archive, Path(tmp) / f"cache-{side}-{i}"))
        sizes = {side: r[0][0]["rows"] for side, r in runs.items()}
        assert sizes["former"] == sizes["hfkit"], sizes  # the same data either way
        print(f"\n{machine_line()}")
        print(f"{archive.name}: {archive.stat().st_size / 1e6:.1f} MB, {files:,} files, "
              f"splits {sizes['hfkit']}; mean of {args.repeat} runs per side, alternating\n")
        print("| run | side | process wall s | load_splits s |")
        print("|---|---|---:|---:|")
        for k, run in enumerate(("first (unpacks)", "later (copy reused)")):
            for side, r in runs.items():
                wall = statistics.mean(x[k]["wall"] for x in r)
                inner = statistics.mean(x[k]["seconds"] for x in r)
                print(f"| {run} | {side} | {wall:.2f} | {inner:.2f} |")


if __name__ == "__main__":
    main()

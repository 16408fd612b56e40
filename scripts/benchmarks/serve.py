"""Load test of `hfkit serve` as users start it: batched serving against one request at a time.

Starts ``hfkit serve RUN --port P`` as a process (the README's command) four times in the same run:
as it comes (requests arriving together batched, ``--max-batch 32``), with ``--max-batch 1`` (one
forward pass per request, what a plain FastAPI endpoint does), and on the run's ONNX export
(``hfkit export RUN --quantize int8``): its folder (onnxruntime fp32) and its ``model.int8.onnx``
by path; it sends each the same bounded load: ``--requests``
POST /predict of real hymenoptera JPEGs from ``--clients`` concurrent clients over loopback.
Prints requests/s, p50/p95/p99 latency, errors, and how busy the machine's CPUs were meanwhile
(server and clients together: near 100% means the CPUs, not the server's waiting, set the pace;
run it on an otherwise quiet machine).

    python scripts/benchmarks/serve.py                       # trains a small result folder first
    python scripts/benchmarks/serve.py --model runs/ants --requests 2000 --clients 16
    python scripts/benchmarks/serve.py --model runs/imdb-cpu --requests 500   # a text classifier:
                                                             # IMDb test reviews as {"texts": [review]}

The clients run on the same machine as the server (on a 2-core machine they take a share of it).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, clean_env, cpu_seconds, machine_line, percent, run_recipe  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "hymenoptera_data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    hfkit = Path(sys.executable).with_name("hfkit")
    server = subprocess.Popen([str(hfkit), "serve", str(model), "--port", str(port), "--max-batch",
                               str(max_batch)], cwd=REPO, env=clean_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hfkit serve exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("hfkit serve did not answer /health within 120 s")


def image_request(images: list[bytes]):
    return lambda http, url, i: http.post(f"{url}/predict",
                                          files=[("image", ("x.jpg", images[i % len(images)]))])


def text_request(texts: list[str]):
    return lambda http, url, i: http.post(f"{url}/predict", json={"texts": [texts[i % len(texts)]]})


def imdb_reviews(imdb: Path, n: int = 256) -> list[str]:
    import pyarrow.parquet as pq

    reviews = pq.read_table(imdb / "plain_text" / "test-00000-of-00001.parquet", columns=["text"])
    return reviews.column("text").to_pylist()[::97][:n]  # spread over both classes (the file is sorted)


def load(url: str, send, requests: int, clients: int) -> dict:
    """Send the requests (``send(http, url, i)``, one POST); requests/s, latency percentiles (ms),
    errors, and the share of the machine's CPU time that was busy meanwhile."""
    import httpx

    latencies: list[float] = []
    errors = 0

    def client(share: range) -> None:
        nonlocal errors
        with httpx.Client(timeout=120) as http:
            for i in share:
                start = time.perf_counter()
                try:
                    ok = send(http, url, i).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

    before, start = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [range(c, requests, clients) for c in range(clients)]))
    wall = time.perf_counter() - start
    after = cpu_seconds()
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return {"rps": requests / wall, "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "errors": errors,
            "wall": wall, "busy": (after[0] - before[0]) / (wall * (os.cpu_count() or 1)) if before else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a hymenoptera result folder (default: train one now)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--data", type=Path, default=DATA, help="hymenoptera_data (its val/ images are sent)")
    parser.add_argument("--imdb", type=Path, default=REPO.parent / "shared" / "data" / "imdb",
                        help="with a text --model: the IMDb copy whose test reviews are sent")
    args = parser.parse_args()
    text = args.model is not None and (args.model / "tokenizer_config.json").is_file()
    if text:
        send, what = text_request(imdb_reviews(args.imdb)), "one IMDb test review each, text classifier"
    else:
        images = [p.read_bytes() for p in sorted((args.data / "val").glob("*/*.jpg"))[:64]]
        if not images:
            sys.exit(f"no images under {args.data / 'val'}")
        send, what = image_request(images), "ResNet-18, 224 px, real JPEGs"
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        model = args.model
        if model is None:  # the model's accuracy does not matter here, its size and input do
            model = Path(tmp) / "run"
            run_recipe("hymenoptera", [f"data.path={args.data}", "model.pretrained=false", "train.epochs=1",
                                       "data.max_train_samples=16", "data.max_eval_samples=8",
                                       "eval.num_preview_images=0"], out=model)
        hfkit = Path(sys.executable).with_name("hfkit")
        subprocess.run([str(hfkit), "export", str(model), "--format", "onnx", "--quantize", "int8",
                        "--out", f"{tmp}/onnx"], check=True, env=clean_env(), stdout=subprocess.DEVNULL)
        rows = {}
        for name, served, max_batch in (
                ("hfkit serve RUN (batched, --max-batch 32)", model, 32),
                ("hfkit serve RUN --max-batch 1 (one request per pass)", model, 1),
                ("hfkit serve RUN/onnx (onnxruntime fp32, batched)", Path(tmp) / "onnx", 32),
                ("hfkit serve RUN/onnx/model.int8.onnx (onnxruntime int8, batched)",
                 Path(tmp) / "onnx" / "model.int8.onnx", 32)):
            server, url = start_server(served, max_batch)
            try:
                load(url, send, 2 * args.clients, args.clients)  # warm-up
                rows[name] = load(url, send, args.requests, args.clients)
            finally:
                server.terminate()
                server.wait(30)
    print(f"\n{machine_line()}")
    print(f"{args.requests} POST /predict ({what}) from {args.clients} clients on loopback\n")
    print("| server | requests/s | p50 ms | p95 ms | p99 ms | errors | machine busy |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} "
              f"| {r['errors']} | {percent(r['busy'])} |")
    batched, single, onnx, int8 = rows.values()
    print(f"\nbatching: {batched['rps'] / single['rps']:.2f}x the requests/s of one at a time; "
          f"onnxruntime: {onnx['rps'] / batched['rps']:.2f}x (fp32), {int8['rps'] / batched['rps']:.2f}x "
          "(int8) the requests/s of PyTorch")


if __name__ == "__main__":
    main()

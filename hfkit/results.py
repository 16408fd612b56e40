"""One reader of result folders and model folders, local or on the Hub.

What a folder is (its task, timm or transformers, its labels) and how it was made (the saved
``recipe.yaml``, ``all_results.json``) is read here and nowhere else: predict, qa, generate,
evaluate, push, the model card and the demos all ask :func:`read_result`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hfkit import tasks
from hfkit.offline import is_hub_id, loading_weights
from hfkit.recipes import QA_MAX_LENGTH, DataArgs, EvalArgs

RUN_FILES = ("recipe.yaml", "all_results.json")  # how a model was made, read beside its config.json
ADAPTER_CONFIG = "adapter_config.json"  # peft's: a LoRA adapter folder, loaded on its base model
ONNX_FILE = "model.onnx"  # the model of an export folder, beside its config.json and preprocessing
# how answering windows and spans when neither the user nor a QA result folder says: as training
QA_DEFAULTS = {"max_answer_length": EvalArgs.max_answer_length, "doc_stride": DataArgs.doc_stride,
               "max_length": QA_MAX_LENGTH}


@dataclass
class ResultFolder:
    source: str  # the folder or Hub id as given
    config: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)  # recipe.yaml as saved ({} if none)
    results: dict[str, Any] = field(default_factory=dict)  # all_results.json ({} if none)
    onnx: bool = False  # an export folder (hfkit export): model.onnx is the model, run by onnxruntime
    onnx_file: str = ONNX_FILE  # the export's file that runs: model.onnx, or model.int8.onnx given by path
    adapter_config: dict[str, Any] = field(default_factory=dict)  # peft's, in a LoRA adapter folder

    @property
    def adapter(self) -> bool:
        """A LoRA adapter folder (``train.strategy=lora``): the weights are an adapter on a base model."""
        return bool(self.adapter_config)

    @property
    def base_model(self) -> str | None:
        """The adapter's base model: a Hub id or a folder (None for a plain model folder)."""
        return self.adapter_config.get("base_model_name_or_path")

    @property
    def family(self) -> str:
        """timm's config.json has ``architecture``; transformers' has ``architectures``."""
        timm = "architecture" in self.config and "architectures" not in self.config
        return "timm" if timm else "transformers"

    @property
    def task(self) -> tasks.Task:
        found = tasks.TASKS.get(self.recipe.get("task")) or tasks.for_config(self.config)
        if found is None:
            raise ValueError(f"'{self.source}': no recipe.yaml, and config.json does not say what the model "
                             f"does (architectures: {self.config.get('architectures')}); hfkit serves "
                             "timm image classifiers and transformers models ending in "
                             + ", ".join(a for t in tasks.TASKS.values() for a in t.architectures))
        return found

    @property
    def architecture(self) -> str | None:
        if self.family == "timm":
            return self.config.get("architecture")
        return (self.config.get("architectures") or [self.config.get("model_type")])[0]

    @property
    def labels(self) -> list[str]:
        """Class names in index order ([] when the model has none, or only LABEL_0, LABEL_1 ...)."""
        if self.family == "timm":
            return [str(x) for x in self.config.get("label_names") or []]
        id2label = self.config.get("id2label") or {}
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
        return [] if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names

    def predictor(self):
        """The class that serves this folder: the task's PyTorch predictor, or its onnxruntime one
        for an export folder."""
        if not self.onnx:
            return self.task.load("predictor")
        if not self.task.onnx_predictor:
            raise ValueError(f"'{self.source}' is an ONNX export of a {self.task.name} model, which hfkit "
                             "does not run with onnxruntime yet: use the result folder it came from")
        serve = self.task.load("onnx_predictor")
        if self.onnx_file == ONNX_FILE:
            return serve
        folder, file = str(Path(self.source).expanduser().parent), self.onnx_file

        def serve_file(_source: str, *args, **kwargs):  # another file of the folder: model.int8.onnx
            return serve(folder, *args, file=file, **kwargs)
        return serve_file

    def section(self, name: str) -> dict[str, Any]:
        """One section of the saved recipe (``data``, ``train``, ...), {} if absent."""
        return self.recipe.get(name) or {}

    def max_length(self) -> int | None:
        """Where training and evaluation cut a text classifier's inputs (the recipe's
        ``data.max_length``); None when the folder has no recipe or it left the default."""
        value = self.section("data").get("max_length")
        return value if isinstance(value, int) else None

    def qa_settings(self, **given: int | None) -> dict[str, int]:
        """Window and answer length for answering: what is ``given``, else what training used (a
        QA result folder's recipe), else :data:`QA_DEFAULTS` — so answering decodes as evaluation did."""
        trained: dict[str, Any] = {}
        if self.recipe.get("task") == "question-answering":
            trained = {"max_answer_length": self.section("eval").get("max_answer_length"),
                       "doc_stride": self.section("data").get("doc_stride"),
                       "max_length": self.section("data").get("max_length")}
        return {k: given.get(k) or trained.get(k) or default for k, default in QA_DEFAULTS.items()}


def describe_result(name_or_path: str) -> str:
    """What ``hfkit show`` prints: what the model is, how it was trained, its metrics, its files
    and the commands that use it."""
    found = read_result(name_or_path)
    task, recipe = found.task, found.recipe
    labels = found.labels
    lines = [f"{name_or_path}: {task.name} ({found.family} {found.architecture}"
             + (", ONNX export)" if found.onnx else f", LoRA adapter on {found.base_model})" if found.adapter
                else ")")
             + (f", {len(labels)} classes: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}"
                if labels else "")]
    if recipe:
        train, results = found.section("train"), found.results
        best = f" (best: epoch {results['best_epoch']:g})" if results.get("best_epoch") is not None else ""
        lines.append(f"trained: recipe {recipe.get('name')}, model {found.section('model').get('name')}, "
                     f"data {found.section('data').get('path')}, {train.get('epochs')} "
                     f"epoch{'' if train.get('epochs') == 1 else 's'}{best}"
                     + (", interrupted" if results.get("interrupted") else ""))
    metrics = {k: v for k, v in found.results.items() if k.startswith("eval_") and isinstance(v, float)}
    if metrics:
        lines.append("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        lines.append("files: " + ", ".join(f"{f.name} ({_size(f.stat().st_size)})" for f in files))
    lines += ["use:", f"  hfkit {task.command.format(name_or_path)}", f"  hfkit demo {name_or_path}",
              *([f"  hfkit evaluate --model {name_or_path} --data NEW_DATA"] if task.evaluator else []),
              f"  hfkit push {name_or_path} --repo-id YOU/NAME --dry-run"]
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"


def read_result(name_or_path: str) -> ResultFolder:
    """The folder ``name_or_path`` (a local folder, or a Hub id: from the cache when offline), or
    the export folder of an ONNX file given by its path (``runs/ants/onnx/model.int8.onnx``)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_file() and folder.suffix == ".onnx":
        if not (folder.parent / ONNX_FILE).is_file() or not (folder.parent / "config.json").is_file():
            raise FileNotFoundError(f"'{name_or_path}' is an ONNX file outside an export folder of "
                                    f"hfkit's (with {ONNX_FILE} and config.json): give the folder that "
                                    "`hfkit export` wrote")
        return replace(read_result(str(folder.parent)), source=name_or_path, onnx_file=folder.name)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"'{name_or_path}' has no config.json: {_what_instead(folder)}")
        return ResultFolder(name_or_path, _json(folder / "config.json"), _yaml(folder / "recipe.yaml"),
                            _json(folder / "all_results.json"), onnx=is_export(name_or_path),
                            adapter_config=_json(folder / ADAPTER_CONFIG))
    if folder.exists() or not is_hub_id(name_or_path):
        raise FileNotFoundError(f"no model folder '{name_or_path}' (looked in {Path.cwd()})")
    return _read_hub(name_or_path.removeprefix("hf-hub:"))


def _what_instead(folder: Path) -> str:
    """What a folder without a saved model is, and what to do with it."""
    if (folder / "trainer_state.json").is_file():  # training.STATE_FILE, without importing torch
        return f"it is a training checkpoint; pass its run folder, {folder.parent.parent}"
    if (folder / "checkpoints").is_dir():
        return (f"its run saved checkpoints but no model yet (it stopped before its first evaluation); "
                f"go on with `hfkit finetune --recipe {folder / 'recipe.yaml'} --output-dir {folder} "
                "--resume latest`")
    return "is it a result or model folder?"


def is_export(name_or_path: str) -> bool:
    """Whether a local folder is an ONNX export (``hfkit export``): it holds ``model.onnx``; or a
    path is one of its ONNX files (``model.int8.onnx``)."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        path = path.parent
    return (path / ONNX_FILE).is_file()


@functools.lru_cache(maxsize=8)
def _read_hub(repo_id: str) -> ResultFolder:
    from huggingface_hub import hf_hub_download

    with loading_weights(repo_id):
        config = _json(Path(hf_hub_download(repo_id, "config.json")))

    def optional(name: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, name))
        except Exception:  # not in the repo, or not cached offline: the folder is read without it
            return None

    recipe, results, adapter = optional("recipe.yaml"), optional("all_results.json"), optional(ADAPTER_CONFIG)
    return ResultFolder(repo_id, config, _yaml(recipe) if recipe else {}, _json(results) if results else {},
                        adapter_config=_json(adapter) if adapter else {})


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _yaml(path: Path) -> dict:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}

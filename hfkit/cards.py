"""Model cards for result folders: Hub metadata (YAML) the Hub understands, and a card people can read.

``model_card(folder, repo_id)`` reads the folder's ``config.json``, ``recipe.yaml`` and
``all_results.json`` (the last two are optional: a folder downloaded by hand has neither) and returns
a ``huggingface_hub.ModelCard`` whose metadata holds the library (timm or transformers), the pipeline
tag, the base model and data set when they are Hub repos, the license, and a ``model-index`` with
the evaluation results; its body says what the model is, how it was trained, what it scored, and how
to load it, online and offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hfkit.offline import is_hub_id
from hfkit.results import read_result

DEFAULT_LICENSE = "apache-2.0"

# all_results.json key -> (model-index metric type, name shown in the results table)
METRICS = {"eval_accuracy": ("accuracy", "accuracy"),
           "eval_exact_match": ("exact_match", "exact match"),
           "eval_f1": ("f1", "F1"),
           "eval_perplexity": ("perplexity", "perplexity"),
           "eval_loss": ("loss", "loss")}
PLOTS = {"training_curves.png": "Training curves (train against eval, per epoch)",
         "confusion_matrix.png": "Confusion matrix of the best model on the evaluation set",
         "predictions.png": "Evaluation images: prediction, its probability (true label), green when right"}
# The first line of every generated card. `hfkit push` rewrites a README.md that starts with it and
# uploads any other README.md as it is, so deleting the line keeps one's own edits.
GENERATED_MARK = ("<!-- Written by `hfkit push` from recipe.yaml and all_results.json, and written again "
                  "on every push: delete this line to keep your own edits. -->")
MANY_LABELS = 10  # more labels than this are counted, not listed


def is_generated(readme: str) -> bool:
    """Whether a README.md is a card ``hfkit push`` wrote (and may write again)."""
    return GENERATED_MARK in readme


def model_card(folder: str | Path, repo_id: str, license: str | None = None):
    """The card for result folder ``folder`` uploaded as ``repo_id``: a ``huggingface_hub.ModelCard``
    whose metadata loads back equal (checked here, ValueError if not)."""
    from huggingface_hub import ModelCard, ModelCardData

    info = _FolderInfo(Path(folder), repo_id)
    # an adapter is a peft repo on the Hub: the base model page then lists it among its adapters
    adapter = {"base_model_relation": "adapter"} if info.adapter else {}
    data = ModelCardData(
        library_name="peft" if info.adapter else info.library, pipeline_tag=info.pipeline_tag,
        base_model=info.base_model, datasets=[info.dataset_id] if info.dataset_id else None,
        license=license or DEFAULT_LICENSE,
        metrics=[m.metric_type for m in info.eval_results() if m.metric_type != "loss"] or None,
        tags=["hfkit", info.pipeline_tag, *(["lora", "peft"] if info.adapter else [])],
        model_name=info.name, eval_results=info.eval_results() or None, **adapter)
    content = f"---\n{data.to_yaml()}\n---\n\n{GENERATED_MARK}\n\n{_body(info)}"
    card = ModelCard(content)
    if card.data.to_dict() != data.to_dict():  # what the Hub will read is what was meant
        raise ValueError(f"the model card metadata does not load back as written:\n{data.to_yaml()}")
    return card


class _FolderInfo:
    """What a card says about a result folder, read once from its files."""

    def __init__(self, folder: Path, repo_id: str) -> None:
        self.folder, self.repo_id, self.name = folder, repo_id, repo_id.split("/")[-1]
        read = read_result(str(folder))
        self.config, self.results, self.recipe = read.config, read.results, read.recipe
        self.timm = read.family == "timm"
        self.library = read.family
        self.task = read.task
        self.pipeline_tag = self.task.pipeline_tag
        self.model, self.data = read.section("model"), read.section("data")
        self.train, self.eval = read.section("train"), read.section("eval")
        self.adapter = read.adapter_config  # peft's, for a LoRA adapter folder ({} otherwise)
        self.base_model = self._base_model()
        self.dataset_id = _hub_id(self.data.get("path"))
        self.dataset_name = self.dataset_id or _short_name(self.data.get("path"))
        self.architecture = read.architecture
        self.labels = read.labels if self.task.labels else []

    def _base_model(self) -> str | None:
        """The Hub repo the training started from, only when that is sure: None for random weights,
        local weights or folders, and timm names whose weights timm does not take from the Hub."""
        name, pretrained = self.model.get("name"), self.model.get("pretrained")
        if self.adapter:  # what the adapter loads on: `hfkit push` allows only a Hub id there
            return _hub_id(self.adapter.get("base_model_name_or_path"))
        if not name or pretrained is not True:
            return None
        if self.timm:
            if name.startswith("hf-hub:"):
                return _hub_id(name.removeprefix("hf-hub:"))
            if ":" in name or "/" in name:
                return None  # local-dir:, a folder, a file
            import timm

            cfg = timm.models.get_pretrained_cfg(name)  # None for a name timm has no weights for
            return _hub_id(getattr(cfg, "hf_hub_id", None))
        return _hub_id(name)

    def metric_rows(self) -> list[tuple[str, str, float]]:
        """(all_results key, metric type, value) of the scalar evaluation metrics, in METRICS order."""
        return [(key, metric, self.results[key]) for key, (metric, _) in METRICS.items()
                if isinstance(self.results.get(key), (int, float))
                and not isinstance(self.results[key], bool)]

    def eval_results(self) -> list:
        from huggingface_hub import EvalResult

        rows = []
        for key, metric, value in self.metric_rows():
            args = None
            if key == "eval_f1" and self.labels:
                args = {"average": "binary" if len(self.labels) == 2 else "macro"}
            rows.append(EvalResult(
                task_type=self.pipeline_tag, task_name=self.task.title,
                dataset_type=self.dataset_name or "unknown", dataset_name=self.dataset_name or "unknown",
                dataset_config=self.data.get("config"), dataset_split=self.data.get("eval_split"),
                metric_type=metric, metric_value=value, metric_name=self._metric_name(key), metric_args=args))
        return rows

    def _metric_name(self, key: str) -> str:
        name = METRICS[key][1]
        scorer = self.results.get("qa_scorer")
        if scorer and key in ("eval_exact_match", "eval_f1"):
            return f"{name} ({_SCORERS.get(scorer, scorer)})"
        if key == "eval_f1" and self.labels:
            return f"{name} ({'binary' if len(self.labels) == 2 else 'macro'})"
        return name


_SCORERS = {"cmrc2018": "CMRC 2018", "squad": "SQuAD v1.1"}


# ---------------------------------------------------------------------------------------------
# The body


def _body(info: _FolderInfo) -> str:
    parts = [f"# {info.name}\n", _what_it_is(info)]
    if info.recipe:
        parts.append(_training(info))
    if info.metric_rows():
        parts.append(_results(info))
    parts.append(_how_to_load(info))
    if (info.folder / "onnx" / "model.onnx").is_file():
        parts.append(_onnx(info))
    parts.append(_offline(info))
    return "\n".join(parts)


def _what_it_is(info: _FolderInfo) -> str:
    arch = f" ({info.library} `{info.architecture}`)" if info.architecture else ""
    text = info.task.summary + arch + info.task.does
    if info.base_model or info.recipe:
        text += ", " + ("trained from randomly initialised weights" if info.model.get("pretrained") is False
                        else f"fine-tuned from {_base_markdown(info)}")
    if info.recipe:
        text += f" on {_data_markdown(info)}"
    text += "."
    if info.labels:
        shown = ", ".join(f"`{_cell(x)}`" for x in info.labels) if len(info.labels) <= MANY_LABELS else (
            ", ".join(f"`{_cell(x)}`" for x in info.labels[:MANY_LABELS]) + ", ...")
        text += f" It tells {len(info.labels)} classes apart: {shown}."
    if info.recipe:
        # not the recipe's description: it tells the registered recipe, which --set may have changed
        text += f" Trained with hfkit, recipe `{info.recipe.get('name', 'custom')}`."
    if info.adapter:
        text += (f" This repository holds a LoRA adapter (rank {info.adapter.get('r')}, alpha "
                 f"{info.adapter.get('lora_alpha')}, on {_targets(info.adapter)}) and the task head, "
                 f"not the base model's weights: loading it loads {_base_markdown(info)} and puts the "
                 "adapter on top.")
    if info.results.get("interrupted"):
        text += " **The training run was interrupted before its last epoch.**"
    return text + "\n"


def _targets(adapter: dict[str, Any]) -> str:
    targets = adapter.get("target_modules")
    targets = sorted(targets) if isinstance(targets, (list, set)) else [targets] if targets else []
    return ", ".join(f"`{_cell(t)}`" for t in targets) or "peft's default layers"


def _base_markdown(info: _FolderInfo) -> str:
    """Where the weights training started from came from: a Hub repo, a local file or folder, a name."""
    if info.base_model:
        return f"[{info.base_model}](https://huggingface.co/{info.base_model})"
    pretrained = info.model.get("pretrained")
    if isinstance(pretrained, str):
        return f"local weights (`{_cell(_short_name(pretrained))}`)"
    return f"`{_cell(_short_name(info.model.get('name')))}`"


def _data_markdown(info: _FolderInfo) -> str:
    path = info.data.get("path") or ""
    config = f" (configuration `{info.data['config']}`)" if info.data.get("config") else ""
    if info.dataset_id:
        return f"[{info.dataset_id}](https://huggingface.co/datasets/{info.dataset_id}){config}"
    if urlparse(path).scheme in ("http", "https"):
        return f"[{info.dataset_name}]({path}){config}"
    return f"a local data set (`{info.dataset_name}`){config}" if path else "its data"


def _training(info: _FolderInfo) -> str:
    t, d, r = info.train, info.data, info.results
    rows = [("recipe", f"`{info.recipe.get('name', 'custom')}`; all settings in `recipe.yaml`")]
    rows.append(("base model", "none (random initialisation)" if info.model.get("pretrained") is False
                 else _base_markdown(info)))
    rows.append(("data", _data_markdown(info)))
    if "train_samples" in r:
        rows.append(("examples", f"{r['train_samples']} train, {r.get('eval_samples', '?')} evaluation"))
    if t.get("epochs") is not None:
        best = f" (best model: epoch {r['best_epoch']})" if r.get("best_epoch") is not None else ""
        rows.append(("epochs", f"{t['epochs']}{best}"))
    if t.get("batch_size") is not None:
        accumulate = t.get("gradient_accumulation_steps") or 1
        rows.append(("batch size", f"{t['batch_size']}" + (f" × {accumulate} accumulation steps"
                                                            if accumulate > 1 else "") + " per process"))
    if t.get("optimizer"):
        extra = [f"lr {t['lr']}"] if t.get("lr") is not None else []
        if t["optimizer"] in ("sgd", "momentum") and t.get("momentum") is not None:
            extra.append(f"momentum {t['momentum']}")
        if t.get("weight_decay") is not None:
            extra.append(f"weight decay {t['weight_decay']}")
        rows.append(("optimizer", f"{t['optimizer']} ({', '.join(extra)})"))
    if t.get("schedule"):
        warmup = f", {t['warmup_ratio']:.0%} warmup" if t.get("warmup_ratio") else ""
        rows.append(("schedule", f"{t['schedule']}{warmup}"))
    if t.get("mixed_precision"):
        precision = t["mixed_precision"]
        rows.append(("precision", "fp32" if precision == "no" else f"{precision} autocast"))
    if t.get("strategy") and t["strategy"] != "full":
        rows.append(("strategy", t["strategy"]))
    if info.adapter:
        a = info.adapter
        full = ", ".join(a.get("modules_to_save") or []) or "nothing but the adapters"
        rows.append(("LoRA", f"rank {a.get('r')}, alpha {a.get('lora_alpha')}, dropout "
                             f"{a.get('lora_dropout')}, on {_targets(a)}; trained in full: {_cell(full)}"))
    for key, label in (("label_smoothing", "label smoothing"), ("mixup", "mixup alpha"),
                       ("cutmix", "CutMix alpha"), ("ema_decay", "EMA decay"),
                       ("max_grad_norm", "gradient clipping (norm)")):
        if t.get(key):
            rows.append((label, str(t[key])))
    for key, label in (("image_size", "image size"), ("max_length", "max length (tokens)"),
                       ("block_size", "block size (tokens)")):
        if d.get(key):
            rows.append((label, str(d[key])))
    if info.task.name == "question-answering":
        length = r.get("max_length", d.get("max_length"))
        rows.append(("windows", f"{length} tokens, stride {d.get('doc_stride')}"))
    if info.eval.get("metric"):
        rows.append(("best model chosen by", f"eval {info.eval['metric']}"))
    if t.get("seed") is not None:
        rows.append(("seed", str(t["seed"])))
    if r.get("train_runtime") is not None:
        rows.append(("training time", _duration(r["train_runtime"])))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Training\n\n| setting | value |\n|---|---|\n{table}\n"


def _results(info: _FolderInfo) -> str:
    where = f" ({info.results['eval_samples']} examples)" if info.results.get("eval_samples") else ""
    rows = [f"| {info._metric_name(key)} | {_number(value)} |" for key, _, value in info.metric_rows()]
    per_class = info.results.get("eval_per_class_accuracy")
    if isinstance(per_class, dict) and len(per_class) <= MANY_LABELS:
        rows += [f"| accuracy of `{_cell(name)}` | {_number(v)} |" for name, v in per_class.items()
                 if isinstance(v, (int, float))]
    text = (f"## Results\n\nOn the evaluation set{where}, with the best model (all numbers in "
            "`all_results.json`):\n\n| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n")
    plots = [f"![{alt}]({name})" for name, alt in PLOTS.items() if (info.folder / name).is_file()]
    return text + ("\n" + "\n\n".join(plots) + "\n" if plots else "")


def _how_to_load(info: _FolderInfo) -> str:
    repo = info.repo_id
    hfkit = "hfkit " + info.task.command.format(repo)
    if info.timm:
        cifar = (f"\n`{info.architecture}` is defined by hfkit, not by timm: `import hfkit.models` before "
                 "`timm.create_model` registers it.\n") if _hfkit_architecture(info.architecture) else ""
        python = ("import timm\nimport torch\nfrom PIL import Image\n"
                  + ("import hfkit.models  # registers the architecture with timm\n" if cifar else "")
                  + f'\nmodel = timm.create_model("hf-hub:{repo}", pretrained=True).eval()\n'
                  "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
                  "with torch.no_grad():\n"
                  '    image = transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)\n'
                  "    probs = model(image).softmax(-1)[0]\n"
                  'labels = model.pretrained_cfg["label_names"]\n'
                  "print(labels[int(probs.argmax())], float(probs.max()))")
        return ("## How to use\n\nWith [timm](https://github.com/huggingface/pytorch-image-models), "
                "with the preprocessing of training (input size, mean/std, crop) from the model's config:\n"
                f"{cifar}\n"
                f"```python\n{python}\n```\n\nWith hfkit:\n\n```bash\n{hfkit}\n```\n")
    auto = info.task.auto_class
    if info.adapter:  # the base model from its repo, sized by this repo's config, the adapter on top
        load = (f"from peft import PeftModel\nfrom transformers import AutoConfig, {auto}, AutoTokenizer\n\n"
                f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
                f'config = AutoConfig.from_pretrained("{repo}")  # the trained head: its size and labels\n'
                f'base = {auto}.from_pretrained("{info.base_model}", config=config,\n'
                f"{' ' * (len(auto) + 24)}ignore_mismatched_sizes=True)  # the head comes from the adapter\n"
                f'model = PeftModel.from_pretrained(base, "{repo}").eval()\n')
    else:
        load = (f"from transformers import {auto}, AutoTokenizer\n\n"
                f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
                f'model = {auto}.from_pretrained("{repo}").eval()\n')
    if info.task.name == "question-answering":
        python = (load + "\n# or, with the span search, long contexts and scores done for you:\n"
                  "from hfkit.inference import answer\n\n"
                  f'answer("Who lives in Paris?", "Alice lives in Paris.", model="{repo}")')
    elif info.task.name == "causal-lm" and info.adapter:
        python = (load + 'ids = tokenizer("Once upon a time", return_tensors="pt")\n'
                  "print(tokenizer.decode(model.generate(**ids, max_new_tokens=50, do_sample=True)[0]))")
    elif info.task.name == "causal-lm":
        python = ("from transformers import pipeline\n\n"
                  f'generator = pipeline("text-generation", model="{repo}")\n'
                  'print(generator("Once upon a time", max_new_tokens=50)[0]["generated_text"])')
    else:
        python = ("import torch\n" + load + "with torch.no_grad():\n"
                  '    probs = model(**tokenizer(["A text to classify."], return_tensors="pt", '
                  "truncation=True)).logits.softmax(-1)[0]\n"
                  "print(model.config.id2label[int(probs.argmax())], float(probs.max()))")
    library = ("[peft](https://huggingface.co/docs/peft) and [transformers](https://huggingface.co/docs/"
               "transformers)" if info.adapter else "[transformers](https://huggingface.co/docs/transformers)")
    return (f"## How to use\n\nWith {library}:\n\n"
            f"```python\n{python}\n```\n\nWith hfkit:\n\n```bash\n{hfkit}\n```\n")


def _onnx(info: _FolderInfo) -> str:
    """How to run the ``onnx/`` export (``hfkit export``) that the push carried, with onnxruntime."""
    local = f"./models/{info.name}"
    has_int8 = (info.folder / "onnx" / "model.int8.onnx").is_file()
    int8 = " and `onnx/model.int8.onnx` (int8)" if has_int8 else ""
    if info.timm:  # the preprocessing of training, from onnx/config.json as timm reads it
        feed = ("from PIL import Image\nfrom timm.data import create_transform, resolve_data_config\n"
                "from timm.models._hub import load_model_config_from_path\n\n"
                "cfg, _, _ = load_model_config_from_path(folder)\n"
                "transform = create_transform(**resolve_data_config(pretrained_cfg=cfg))\n"
                'inputs = {"pixel_values": transform(Image.open("image.jpg").convert("RGB"))[None].numpy()}\n'
                "logits = session.run(None, inputs)[0]\n"
                'print(cfg["label_names"][int(logits[0].argmax())])')
    else:
        text = {"question-answering": '"Who lives in Paris?", "Alice lives in Paris."'}.get(
            info.task.name, '"A text to classify."')
        out = {"question-answering": "start_logits, end_logits = session.run(None, inputs)",
               "causal-lm": "logits = session.run(None, inputs)[0]  # next-token logits at each position"
               }.get(info.task.name, "logits = session.run(None, inputs)[0]\n"
                                     "print(AutoConfig.from_pretrained(folder).id2label[int(logits[0].argmax())])")
        feed = ("from transformers import AutoConfig, AutoTokenizer\n\n"
                f'enc = AutoTokenizer.from_pretrained(folder)({text}, return_tensors="np")\n'
                f"inputs = {{i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}}\n{out}")
    python = ("import numpy as np\nimport onnxruntime as ort\n\n"
              f'folder = "{local}/onnx"  # hfkit download {info.repo_id} --to {local} --include "onnx/*"\n'
              'session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])\n'
              + feed)
    return (f"## ONNX\n\n`onnx/model.onnx`{int8} is this model exported by `hfkit export`, checked "
            "against PyTorch on export (see `onnx/export.json`), with its preprocessing and labels beside "
            f"it. With [onnxruntime](https://onnxruntime.ai) alone:\n\n```python\n{python}\n```\n\n"
            f"With hfkit: `hfkit {info.task.command.format(local + '/onnx')}`.\n")


def _offline(info: _FolderInfo) -> str:
    local = f"./models/{info.name}"
    use = info.task.command
    python = (f'timm.create_model("local-dir:{local}", pretrained=True)' if info.timm
              else f'from_pretrained("{local}")')
    return (f"## Offline use\n\nFetch the model once, on a machine with internet (only the files loading "
            f"needs), and copy the folder where it is used:\n\n```bash\n"
            f"hfkit download {info.repo_id} --to {local}\n"
            f"HF_HUB_OFFLINE=1 hfkit {use.format(local)}\n```\n\n"
            f"In Python, load the folder the same way: `{python}`. "
            f"Without hfkit: `hf download {info.repo_id} --local-dir {local}`.\n"
            + (f"\nThe adapter loads its base model by Hub id: fetch that once into the Hugging Face cache "
               f"too (`hf download {info.base_model}`), and it loads offline from there.\n"
               if info.adapter else ""))


# ---------------------------------------------------------------------------------------------
# Small helpers


def _hub_id(name: Any) -> str | None:
    """``name`` if it is an ``org/name`` Hub repo id rather than a URL, a file or a local folder."""
    return name if isinstance(name, str) and is_hub_id(name) else None


def _short_name(path: Any) -> str | None:
    """A data or model source without the local part of its path: a Hub id, or a folder/zip's own name."""
    if not isinstance(path, str) or not path:
        return None
    if _hub_id(path):
        return path
    name = urlparse(path).path if urlparse(path).scheme in ("http", "https") else path
    name = Path(name.rstrip("/")).name
    for suffix in (".zip", ".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return name or path


def _hfkit_architecture(name: str | None) -> bool:
    """Whether ``name`` is an architecture hfkit.models registers with timm (resnet18_cifar), which
    timm alone cannot build."""
    import timm

    import hfkit.models  # noqa: F401  (registers its architectures)

    return bool(name) and timm.is_model(name) and (
        timm.models.model_entrypoint(name).__module__.startswith("hfkit"))


def _number(value: float) -> str:
    """4 decimals for a share (accuracy 0.9542), 2 for larger numbers (EM 66.53, perplexity 21.07)."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")

"""Scoring a trained model on a data set outside training: ``hfkit evaluate``.

Each task's scorer is named by its ``Task.evaluator`` (hfkit.tasks): extractive QA by EM/F1 as the
official scorers define them, image and text classifiers by the metrics training reports, with
the same preprocessing as ``hfkit predict`` (through the task's predictor, so an ONNX export is
scored with onnxruntime), causal language models by the perplexity training reports, on the same
blocks of tokens.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hfkit.qa import write_predictions
from hfkit.results import QA_DEFAULTS

QUESTIONS_PER_CHUNK = 256  # progress granularity; windows are still batched by batch_size
MISTAKES_SHOWN = 16  # images in mistakes.png
TEXT_KEPT = 200  # characters of each text in predictions.json
LM_BATCH_SIZE = 8  # blocks per forward pass of a causal LM, unless --batch-size says


def evaluate_qa(model: str, data: str, split: str | None = None, output_dir: str | None = None,
                max_samples: int | None = None, batch_size: int | None = None,
                max_answer_length: int = QA_DEFAULTS["max_answer_length"],
                doc_stride: int = QA_DEFAULTS["doc_stride"], max_length: int = QA_DEFAULTS["max_length"],
                scorer: str = "auto", precision: str = "fp32") -> dict[str, Any]:
    """EM/F1 of an extractive QA model on SQuAD-style data; writes predictions.json,
    nbest_predictions.json and eval_results.json into ``output_dir``. Spans rank by their logit
    sums across windows, as in transformers' ``run_qa.py``, so the numbers compare with its own."""
    from hfkit.data.qa import load_qa_data, load_qa_splits
    from hfkit.inference import load_answerer
    from hfkit.objectives import ExtractiveQA, metric, qa_scorer
    from hfkit.results import read_result

    # the run's own data with its settings (its held-out part); QA's --max-samples: the first N
    args, seed, name = _data_args(read_result(model), data, split, None, lambda a: list(load_qa_data(a.path)))
    ds = load_qa_splits(args, seed).eval
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    qa = load_answerer(model, precision=precision, max_length=max_length, doc_stride=doc_stride)
    questions, contexts = list(ds["question"]), list(ds["context"])
    started, nbest = time.perf_counter(), []
    with tqdm(total=len(ds), desc="answering", unit="q") as bar:
        for i in range(0, len(ds), QUESTIONS_PER_CHUNK):
            chunk = slice(i, i + QUESTIONS_PER_CHUNK)
            nbest += qa(questions[chunk], contexts[chunk], top_k=ExtractiveQA.NBEST_KEPT,
                        max_answer_length=max_answer_length, batch_size=batch_size)
            bar.update(len(questions[chunk]))
    seconds = time.perf_counter() - started
    scorer = qa_scorer(contexts) if scorer == "auto" else scorer
    ids = list(ds["id"])
    predictions = {i: best[0]["answer"] for i, best in zip(ids, nbest)}
    scores = metric(scorer).compute(
        predictions=[{"id": i, "prediction_text": p} for i, p in predictions.items()],
        references=[{"id": i, "answers": a} for i, a in zip(ids, ds["answers"])])
    out = Path(output_dir) if output_dir else _default_output(model, data, split)
    out.mkdir(parents=True, exist_ok=True)
    results = {"exact_match": scores["exact_match"], "f1": scores["f1"], "scorer": scorer,
               "model": model, "data": data, "split": name, "questions": len(ds),
               "seconds": round(seconds, 3), "questions_per_second": round(len(ds) / max(seconds, 1e-9), 3),
               "precision": precision}
    write_predictions(dict(zip(ids, nbest)), out)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    results["output_dir"] = str(out)
    return results


def evaluate_classifier(model: str, data: str, split: str | None = None, output_dir: str | None = None,
                        max_samples: int | None = None, batch_size: int | None = None,
                        precision: str = "fp32") -> dict[str, Any]:
    """Loss, accuracy, F1 and per-class accuracy of an image or text classifier on a labelled data
    set (anything ``data.path`` reads); writes eval_results.json, predictions.json (one row per
    example, best class and its probability), confusion_matrix.png and, for images, mistakes.png
    into ``output_dir``. The data's classes are matched to the model's by name (by index where
    only one side numbers them); the data a run trained on is read with the run's settings."""
    import numpy as np

    from hfkit.objectives import classification_metrics
    from hfkit.plots import plot_confusion_matrix
    from hfkit.results import read_result

    found = read_result(model)
    examples = _labelled(found, data, split, max_samples)
    classifier = found.predictor()(model, precision=precision)
    labels = list(classifier.labels)
    truth, matched = _model_classes(examples["names"], sorted(set(examples["labels"])), labels, model)
    if matched == "by index":
        pairs = [f"{examples['names'][c]} = {labels[truth[c]]}" for c in sorted(set(examples["labels"]))]
        print(f"hfkit: the data's classes matched to the model's by index: {', '.join(pairs[:10])}",
              file=sys.stderr)
    started = time.perf_counter()
    probs, skipped = _probabilities(classifier, examples["inputs"], batch_size or 32)
    seconds = time.perf_counter() - started
    kept = np.flatnonzero(~np.isnan(probs[:, 0]))
    if not len(kept):
        raise ValueError(f"none of the {len(probs)} examples of {data} could be read")
    probs = probs[kept]
    y = np.asarray([truth[examples["labels"][i]] for i in kept])
    preds, best = probs.argmax(1), probs.max(1)
    losses = -np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))
    scores = classification_metrics(preds, y, losses, len(labels))
    scores["eval_per_class_accuracy"] = dict(zip(labels, scores["eval_per_class_accuracy"]))
    if len(set(y.tolist())) < 2:  # binary F1 is the second class's: 0 on photos of the first alone
        scores["eval_f1"] = None
    out = Path(output_dir) if output_dir else _default_output(model, data, split)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"input": _shown(examples["inputs"][i], i), "label": labels[t], "prediction": labels[p],
             "score": round(float(b), 6)} for i, t, p, b in zip(kept, y, preds, best)]
    (out / "predictions.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_confusion_matrix(y, preds, labels, out / "confusion_matrix.png")
    wrong = np.flatnonzero(preds != y)
    if found.task.data == "images" and len(wrong):
        worst = wrong[np.argsort(-best[wrong], kind="stable")][:MISTAKES_SHOWN]
        _plot_mistakes(classifier, [examples["inputs"][kept[k]] for k in worst], y[worst], preds[worst],
                       best[worst], len(wrong), labels, out)
    results = {**scores, "mistakes": len(wrong), "classes_matched": matched, "model": model, "data": data,
               "split": examples["split"], "examples": len(kept), "skipped_files": skipped,
               "seconds": round(seconds, 3), "examples_per_second": round(len(kept) / max(seconds, 1e-9), 3),
               "precision": precision}
    (out / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return {**results, "output_dir": str(out)}


def evaluate_causal_lm(model: str, data: str, split: str | None = None, output_dir: str | None = None,
                       max_samples: int | None = None, batch_size: int | None = None,
                       block_size: int | None = None) -> dict[str, Any]:
    """Loss and perplexity of a causal LM on texts (anything the ``gpt2`` recipe's ``data.path``
    reads), computed as training's evaluation does: the texts joined into blocks of
    ``block_size`` tokens (default: the run's, else as training chooses), the token-weighted mean
    of the next-token losses. Writes eval_results.json and blocks.json (every block's loss and
    perplexity with its text, hardest first: where the model is surprised) into ``output_dir``."""
    import numpy as np
    import torch

    from hfkit.data.causal_lm import default_block_size, group_into_blocks, make_block_loader
    from hfkit.inference import _load_causal_lm
    from hfkit.objectives import CausalLM
    from hfkit.results import read_result

    found = read_result(model)
    texts, name = _lm_texts(found, data, split, max_samples)
    lm, tokenizer = _load_causal_lm(model, None)
    block = block_size or found.results.get("block_size") or default_block_size(tokenizer, lm.config)
    blocks = group_into_blocks(texts, tokenizer, block)
    objective, parts = CausalLM(), []
    started = time.perf_counter()
    with torch.inference_mode(), tqdm(total=len(blocks), desc="evaluating", unit="block") as bar:
        for batch in make_block_loader(blocks, batch_size or LM_BATCH_SIZE, False, 0):
            parts.append({k: v.float().numpy() for k, v in objective.eval_batch(
                lm, {k: v.to(lm.device) for k, v in batch.items()}).items()})
            bar.update(len(batch["input_ids"]))
    seconds = time.perf_counter() - started
    gathered = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    scores, _ = objective.metrics(gathered)
    out = Path(output_dir) if output_dir else _default_output(model, data, split)
    out.mkdir(parents=True, exist_ok=True)
    _write_blocks(blocks, gathered, tokenizer, out / "blocks.json")
    tokens = int(gathered["tokens"].sum())
    results = {**scores, "model": model, "data": data, "split": name, "texts": len(texts),
               "blocks": len(blocks), "block_size": block, "tokens_scored": tokens,
               "seconds": round(seconds, 3), "tokens_per_second": round(tokens / max(seconds, 1e-9), 3)}
    (out / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return {**results, "output_dir": str(out)}


def _lm_texts(found, data: str, split: str | None, max_samples: int | None):
    """The split's texts (a seeded random ``max_samples`` of them, kept in order), read as the
    ``gpt2`` recipe reads ``data.path`` (the run's own data with the run's settings: its Hub
    configuration, wikitext-2-raw-v1, its held-out part); with the split's name."""
    from hfkit.data.causal_lm import load_lm_splits, load_lm_texts

    args, seed, name = _data_args(found, data, split, max_samples, lambda a: list(load_lm_splits(a)))
    _, texts = load_lm_texts(args, seed=seed)
    return texts, name


def _write_blocks(blocks, gathered: dict, tokenizer, path: Path) -> None:
    """blocks.json: each block's loss and perplexity and its text, the hardest first."""
    from hfkit.objectives import safe_exp

    losses = gathered["loss_sum"] / gathered["tokens"].clip(min=1)
    order = sorted(range(len(losses)), key=lambda i: -losses[i])
    ids = blocks["input_ids"]
    rows = [{"block": i, "loss": round(float(losses[i]), 6), "perplexity": round(safe_exp(losses[i]), 3),
             "text": _shown(tokenizer.decode(ids[i]), i)} for i in order]
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


def _labelled(found, data: str, split: str | None, max_samples: int | None) -> dict[str, Any]:
    """The split's inputs (image bytes or paths, or texts), class indices, class names and split
    name, read by the training data loaders (same columns, same checks)."""
    import datasets

    if found.task.data == "images":
        from hfkit.data.images import load_image_splits as load
        from hfkit.data.sources import load_splits

        one = _one_class(data, split)
        if one is not None:
            return _one_class_examples(*one, max_samples)
        args, seed, name = _data_args(found, data, split, max_samples, lambda a: list(load_splits(a.path)))
        loaded = load(args, seed=seed)
        column = loaded.image_column
        entries = loaded.eval.cast_column(column, datasets.Image(decode=False))[column]
        inputs, labels = [e["bytes"] or e["path"] for e in entries], list(loaded.eval[loaded.label_column])
    else:
        from hfkit.data.text import load_text_classification as load
        from hfkit.data.text import read_text_splits

        args, seed, name = _data_args(found, data, split, max_samples, lambda a: list(read_text_splits(a)))
        loaded = load(args, seed=seed)
        inputs, labels = list(loaded.eval["text"]), list(loaded.eval["label"])
    return {"inputs": inputs, "labels": labels, "names": loaded.label_names, "split": name}


def _data_args(found, data: str, split: str | None, max_samples: int | None, split_names):
    """(DataArgs, seed, split name) that read the split to score as the training loaders read it.
    The data a run trained on is read with the run's own settings (columns, configuration, seed),
    so that its evaluation split is training's: the part it held out, when it had none."""
    from hfkit.data.sources import pick_splits
    from hfkit.recipes import DataArgs

    run = found.section("data")
    if not (run.get("path") and _same_data(str(run["path"]), data)):
        name = _pick_split(split_names(DataArgs(path=data)), split)
        return DataArgs(path=data, train_split=name, eval_split=name, max_eval_samples=max_samples), 0, name
    settings = {**run, "path": data, "max_eval_samples": max_samples or run.get("max_eval_samples")}
    seed = found.section("train").get("seed", 0)
    names = split_names(DataArgs(**settings))
    if split is not None:
        name = _pick_split(names, split)
        return DataArgs(**{**settings, "train_split": name, "eval_split": name}), seed, name
    train, held = pick_splits(names, settings.get("train_split"), settings.get("eval_split"))
    return DataArgs(**settings), seed, held or f"{train} (the part training held out)"


def _same_data(a: str, b: str) -> bool:
    """Whether two data.path values name the same data: the same Hub id, or the same local path."""
    if a == b:
        return True
    first, second = Path(a).expanduser(), Path(b).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def _one_class(data: str, split: str | None) -> tuple[Path, str] | None:
    """(class folder, split name) when the images to score are all of one class: ``new/ants/*.jpg``,
    or ``new/val/ants/*.jpg``. ``datasets`` gives such a folder no labels (one class is no
    classification to train), but new photos of one class are a fair test of a model."""
    from datasets.data_files import SPLIT_KEYWORDS

    # folder names as datasets names their splits (val/: validation)
    split_of = {word: str(name) for name, words in SPLIT_KEYWORDS.items() for word in words}
    folder, name = Path(data).expanduser(), None
    while folder.is_dir() and not _visible(folder, "files"):
        folders = _visible(folder, "folders")
        splits = {split_of[f]: f for f in folders if f in split_of}  # as datasets names them
        if name is None and splits:
            name = _pick_split(list(splits), split)
            folder = folder / splits[name]
        elif len(folders) == 1:
            inner = next(iter(folders.values()))
            if not _visible(inner, "folders"):  # images: a class (plain_text/*.parquet: a data set)
                if not any(_is_image(f) for f in _visible(inner, "files").values()):
                    return None
                # datasets names a folder without splits "train"
                return (inner, name or "train") if split in (None, name or "train") else None
            folder = inner  # a wrapper folder (new.zip unpacked to new/)
        else:
            return None
    return None


def _visible(parent: Path, kind: str) -> dict[str, Path]:
    """The folders (or files) in ``parent`` by name, without hidden ones."""
    return {p.name: p for p in sorted(parent.iterdir()) if not p.name.startswith((".", "__MACOSX"))
            and (p.is_dir() if kind == "folders" else p.is_file())}


def _is_image(path: Path) -> bool:
    """An image file by its name, as datasets' imagefolder takes it."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return path.suffix.lower() in ImageFolder.EXTENSIONS


def _one_class_examples(folder: Path, split: str, max_samples: int | None) -> dict[str, Any]:
    """The images of one class folder (its subfolders too), a seeded random ``max_samples`` of them."""
    import numpy as np

    files = sorted(str(f) for f in folder.rglob("*") if _is_image(f))
    if not files:
        raise ValueError(f"{folder} holds no images")
    if max_samples is not None and max_samples < len(files):
        files = [files[i] for i in sorted(np.random.default_rng(0).choice(len(files), max_samples, False))]
    return {"inputs": files, "labels": [0] * len(files), "names": [folder.name], "split": split}


def _model_classes(names: list[str], present: list[int], labels: list[str], model: str
                   ) -> tuple[list[int], str]:
    """For each class of the data, the model's index of it (-1 for a class the data names but has
    no example of), and how they were matched: by name; else by index where one side only numbers
    its classes (data labelled 0/1, or a Hub model's LABEL_0/LABEL_1), as the model was trained."""
    import re

    if all(names[i] in labels for i in present):
        return [labels.index(n) if n in labels else -1 for n in names], "by name"
    digits = all(n.isdigit() for n in names)
    if digits or all(re.fullmatch(r"LABEL_\d+", n) for n in labels):
        index = [int(n) if digits else i for i, n in enumerate(names)]
        if all(index[i] < len(labels) for i in present):
            return index, "by index"
    unknown = [names[i] for i in present if names[i] not in labels]
    raise ValueError(f"the data has classes that {model} does not know: {', '.join(unknown[:10])} "
                     f"(its classes: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}). "
                     "Classes are matched by name (by index only where the data or the model numbers "
                     "them): score it on data labelled with its own classes")


def _probabilities(classifier, inputs: list, batch_size: int):
    """Each input's probability of each of the model's classes, in its index order: one float32
    row per input (a row of NaN where an image is unreadable, named in the second list, as training
    skips it). 50,000 images of 1,000 classes take 200 MB."""
    import numpy as np

    from hfkit.data.transforms import UNREADABLE

    index = {name: i for i, name in enumerate(classifier.labels)}
    probs = np.full((len(inputs), len(index)), np.nan, dtype=np.float32)
    skipped: list[str] = []

    def fill(start: int, chunk: list) -> None:
        for row, ranked in enumerate(classifier.predict(chunk, top_k=len(index)), start):
            for name, p in ranked:
                probs[row, index[name]] = p

    with tqdm(total=len(inputs), desc="evaluating", unit="example") as bar:
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            try:
                fill(i, chunk)
            except UNREADABLE:  # one bad file: the others of its batch one by one
                for j, item in enumerate(chunk, i):
                    try:
                        fill(j, [item])
                    except UNREADABLE as e:
                        skipped.append(f"{_shown(item, j)} ({type(e).__name__}: {e})")
            bar.update(len(chunk))
    return probs, skipped


def _shown(item, index: int) -> str:
    """An input as predictions.json shows it: an image's path, a text's beginning."""
    if isinstance(item, bytes):
        return f"(image {index} of the split, embedded in the data)"
    text = str(item)
    return text if len(text) <= TEXT_KEPT else text[:TEXT_KEPT] + " ..."


def _plot_mistakes(classifier, images: list, y, preds, best, mistakes: int, labels, out: Path) -> None:
    """The most confident mistakes: where a picture says more than the confusion matrix."""
    from hfkit.plots import plot_prediction_grid

    plot_prediction_grid([classifier.load(image) for image in images], [int(t) for t in y],
                         [int(p) for p in preds], labels, out / "mistakes.png",
                         probs=[float(b) for b in best],
                         caption=f"The {len(images)} most confident of {mistakes} mistakes: prediction "
                                 "and its probability (true class)")


def _pick_split(names: list[str], split: str | None) -> str:
    from hfkit.data.sources import EVAL_SPLIT_NAMES

    if split is not None:
        if split not in names:
            raise ValueError(f"no split '{split}' in the data (splits: {names})")
        return split
    if len(names) == 1:
        return names[0]
    found = next((s for s in EVAL_SPLIT_NAMES if s in names), None)
    if found is None:
        raise ValueError(f"which split? the data has {names}; pass --split")
    return found


def _default_output(model: str, data: str, split: str | None = None) -> Path:
    """Beside the model when it is a local folder (runs/x/eval-<data>), else ./eval-<data>; with
    ``-<split>`` when one was asked for, so that scoring another split keeps the first results."""
    stem = (Path(data.rstrip("/")).stem or "data") + (f"-{split}" if split else "")
    path = Path(model).expanduser()
    if path.is_file():  # an export's model.int8.onnx: beside it, apart from model.onnx's results
        return path.parent / f"eval-{stem}-{path.stem}"
    return (path if path.is_dir() else Path(".")) / f"eval-{stem}"

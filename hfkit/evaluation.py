"""Scoring a trained model on a data set outside training: ``hfkit evaluate``.

Each task's scorer is named by its ``Task.evaluator`` (hfkit.tasks): extractive QA by EM/F1 as the
official scorers define them, image and text classifiers by the metrics training reports, with
the same preprocessing as ``hfkit predict`` (through the task's predictor, so an ONNX export is
scored with onnxruntime), causal language models by the perplexity training reports, on the same
blocks of tokens.
"""

from __future__ import annotations

import json
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
    from hfkit.data.qa import load_qa_data
    from hfkit.inference import load_answerer
    from hfkit.objectives import ExtractiveQA, metric, qa_scorer

    splits = load_qa_data(data)
    name = _pick_split(list(splits), split)
    ds = splits[name]
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
    out = Path(output_dir) if output_dir else _default_output(model, data)
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
                        max_samples: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Loss, accuracy, F1 and per-class accuracy of an image or text classifier on a labelled data
    set (anything ``data.path`` reads); writes eval_results.json, predictions.json (one row per
    example, best class and its probability), confusion_matrix.png and, for images, mistakes.png
    into ``output_dir``. The data's classes are matched to the model's by name."""
    import numpy as np

    from hfkit.objectives import classification_metrics
    from hfkit.plots import plot_confusion_matrix
    from hfkit.results import read_result

    found = read_result(model)
    examples = _labelled(found.task.data, data, split, max_samples)
    classifier = found.predictor()(model)
    labels = list(classifier.labels)
    truth = _model_classes(examples["names"], labels, model)
    started = time.perf_counter()
    ranked, skipped = _rank_all(classifier, examples["inputs"], len(labels), batch_size or 32)
    seconds = time.perf_counter() - started
    kept = [i for i, r in enumerate(ranked) if r is not None]
    if not kept:
        raise ValueError(f"none of the {len(ranked)} examples of {data} could be read")
    y = np.asarray([truth[examples["labels"][i]] for i in kept])
    best = [dict(ranked[i]) for i in kept]
    preds = np.asarray([labels.index(ranked[i][0][0]) for i in kept])
    losses = np.asarray([-np.log(max(b[labels[t]], 1e-12)) for b, t in zip(best, y)])
    scores = classification_metrics(preds, y, losses)
    scores["eval_per_class_accuracy"] = dict(zip(labels, scores["eval_per_class_accuracy"]))
    out = Path(output_dir) if output_dir else _default_output(model, data)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"input": _shown(examples["inputs"][i]), "label": labels[t], "prediction": ranked[i][0][0],
             "score": round(ranked[i][0][1], 6)} for i, t in zip(kept, y)]
    (out / "predictions.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    plot_confusion_matrix(y, preds, labels, out / "confusion_matrix.png")
    wrong = [k for k in range(len(kept)) if preds[k] != y[k]]
    if found.task.data == "images" and wrong:
        _plot_mistakes(classifier, examples["inputs"], kept, wrong, y, preds, ranked, labels, out)
    results = {**scores, "mistakes": len(wrong), "model": model, "data": data, "split": examples["split"],
               "examples": len(kept), "skipped_files": skipped, "seconds": round(seconds, 3),
               "examples_per_second": round(len(kept) / max(seconds, 1e-9), 3)}
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
    # a Hub data set's configuration, as the run's recipe named it (wikitext-2-raw-v1)
    config = found.recipe.get("data", {}).get("config") if found.recipe.get("data", {}).get("path") == data \
        else None
    texts, name = _lm_texts(data, config, split, max_samples)
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
    out = Path(output_dir) if output_dir else _default_output(model, data)
    out.mkdir(parents=True, exist_ok=True)
    _write_blocks(blocks, gathered, tokenizer, out / "blocks.json")
    tokens = int(gathered["tokens"].sum())
    results = {**scores, "model": model, "data": data, "split": name, "texts": len(texts),
               "blocks": len(blocks), "block_size": block, "tokens_scored": tokens,
               "seconds": round(seconds, 3), "tokens_per_second": round(tokens / max(seconds, 1e-9), 3)}
    (out / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return {**results, "output_dir": str(out)}


def _lm_texts(data: str, config: str | None, split: str | None, max_samples: int | None):
    """The split's texts (a seeded random ``max_samples`` of them, kept in order), read as the
    ``gpt2`` recipe reads ``data.path``; with the split's name."""
    from hfkit.data.causal_lm import load_lm_splits, load_lm_texts
    from hfkit.recipes import DataArgs

    name = _pick_split(list(load_lm_splits(DataArgs(path=data, config=config))), split)
    _, texts = load_lm_texts(DataArgs(path=data, config=config, train_split=name, eval_split=name,
                                      max_eval_samples=max_samples), seed=0)
    return texts, name


def _write_blocks(blocks, gathered: dict, tokenizer, path: Path) -> None:
    """blocks.json: each block's loss and perplexity and its text, the hardest first."""
    from hfkit.objectives import safe_exp

    losses = gathered["loss_sum"] / gathered["tokens"].clip(min=1)
    order = sorted(range(len(losses)), key=lambda i: -losses[i])
    ids = blocks["input_ids"]
    rows = [{"block": i, "loss": round(float(losses[i]), 6), "perplexity": round(safe_exp(losses[i]), 3),
             "text": _shown(tokenizer.decode(ids[i]))} for i in order]
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


def _labelled(kind: str, data: str, split: str | None, max_samples: int | None) -> dict[str, Any]:
    """The split's inputs (image bytes or paths, or texts), class indices, class names and split
    name, read by the training data loaders (same columns, same checks)."""
    import datasets

    from hfkit.recipes import DataArgs

    if kind == "images":
        from hfkit.data.images import load_image_splits
        from hfkit.data.sources import load_splits

        name = _pick_split(list(load_splits(data)), split)
        loaded = load_image_splits(DataArgs(path=data, train_split=name, eval_split=name,
                                            max_eval_samples=max_samples), seed=0)
        ds = loaded.eval
        entries = ds.cast_column(loaded.image_column, datasets.Image(decode=False))[loaded.image_column]
        inputs = [e["bytes"] or e["path"] for e in entries]
        return {"inputs": inputs, "labels": list(ds[loaded.label_column]), "names": loaded.label_names,
                "split": name}
    from hfkit.data.text import load_text_classification, read_text_splits

    name = _pick_split(list(read_text_splits(DataArgs(path=data))), split)
    loaded = load_text_classification(DataArgs(path=data, train_split=name, eval_split=name,
                                               max_eval_samples=max_samples), seed=0)
    return {"inputs": list(loaded.eval["text"]), "labels": list(loaded.eval["label"]),
            "names": loaded.label_names, "split": name}


def _model_classes(names: list[str], labels: list[str], model: str) -> list[int]:
    """For each class of the data, the model's index of the class of that name."""
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ValueError(f"the data has classes that {model} does not know: {', '.join(unknown[:10])} "
                         f"(its classes: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}). "
                         "Classes are matched by name: score it on data labelled with its own classes")
    return [labels.index(n) for n in names]


def _rank_all(classifier, inputs: list, classes: int, batch_size: int
              ) -> tuple[list[list[tuple[str, float]] | None], list[str]]:
    """Every class with its probability, best first, per input (None where an image is unreadable,
    named in the second list, as training skips it)."""
    from hfkit.data.transforms import UNREADABLE

    ranked: list[list[tuple[str, float]] | None] = []
    skipped: list[str] = []
    with tqdm(total=len(inputs), desc="evaluating", unit="example") as bar:
        for i in range(0, len(inputs), batch_size):
            chunk = inputs[i:i + batch_size]
            try:
                ranked += classifier.predict(chunk, top_k=classes)
            except UNREADABLE:  # one bad file: the others of its batch one by one
                for item in chunk:
                    try:
                        ranked += classifier.predict([item], top_k=classes)
                    except UNREADABLE as e:
                        ranked.append(None)
                        skipped.append(f"{_shown(item)} ({type(e).__name__}: {e})")
            bar.update(len(chunk))
    return ranked, skipped


def _shown(item) -> str:
    """An input as predictions.json shows it: an image's path, a text's beginning."""
    if isinstance(item, bytes):
        return "(embedded image bytes)"
    text = str(item)
    return text if len(text) <= TEXT_KEPT else text[:TEXT_KEPT] + " ..."


def _plot_mistakes(classifier, inputs, kept, wrong, y, preds, ranked, labels, out: Path) -> None:
    """The most confident mistakes: where a picture says more than the confusion matrix."""
    from hfkit.plots import plot_prediction_grid

    worst = sorted(wrong, key=lambda k: -ranked[kept[k]][0][1])[:MISTAKES_SHOWN]
    plot_prediction_grid([classifier.load(inputs[kept[k]]) for k in worst], [int(y[k]) for k in worst],
                         [int(preds[k]) for k in worst], labels, out / "mistakes.png",
                         probs=[ranked[kept[k]][0][1] for k in worst],
                         caption=f"The {len(worst)} most confident of {len(wrong)} mistakes: prediction "
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


def _default_output(model: str, data: str) -> Path:
    """Beside the model when it is a local folder (runs/x/eval-<data>), else ./eval-<data>."""
    stem = Path(data.rstrip("/")).stem or "data"
    base = Path(model) if Path(model).is_dir() else Path(".")
    return base / f"eval-{stem}"

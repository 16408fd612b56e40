"""Scoring a trained model on a data set outside training: ``hfkit evaluate``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hfkit.qa import write_predictions
from hfkit.results import QA_DEFAULTS

QUESTIONS_PER_CHUNK = 256  # progress granularity; windows are still batched by batch_size


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

"""Extractive QA decoding: from start/end logits to answers with scores and character spans.

Used by evaluation during training, by ``hfkit evaluate`` and by :func:`hfkit.inference.answer`, so
all decode alike, and rank as transformers' ``run_qa.py`` does (``utils_qa``): a span's rank is its
raw ``start_logit + end_logit``, compared across all windows of a context. (A softmax per window
would favour the short last window of a long context: its softmax spreads over fewer tokens.)
The search is exact: every valid span of a window (inside the context, end >= start, at most
``max_answer_length`` tokens) is scored at once on the device, and the best ``k`` are kept.
An answer's ``score`` is a probability: the softmax of the logit sums of its context's ``N_BEST``
best answers, as ``utils_qa`` reports them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

N_BEST = 20


def top_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor,
              max_answer_length: int, k: int = N_BEST) -> dict[str, torch.Tensor]:
    """The ``k`` best spans of each window: token ``start``/``end`` [B, k], ``score`` [B, k], the
    logit sum (-inf past the window's valid spans), and ``null`` [B], the sum at CLS ("no answer").
    """
    start, end = start_logits.float(), end_logits.float()
    context = context_mask.bool()
    length = start.shape[1]
    pos = torch.arange(length, device=start.device)
    width = pos[None, :] - pos[:, None]  # end - start
    valid = (width >= 0) & (width < max_answer_length)
    valid = valid[None] & context[:, :, None] & context[:, None, :]
    pairs = (start[:, :, None] + end[:, None, :]).masked_fill(~valid, -torch.inf)
    best = pairs.flatten(1).topk(min(k, length * length), dim=-1)
    return {"start": best.indices // length, "end": best.indices % length, "score": best.values,
            "null": start[:, 0] + end[:, 0]}


def collect_answers(spans: dict[str, np.ndarray], example_index: Sequence[int],
                    offsets: Sequence[Sequence[tuple[int, int]]], contexts: Sequence[str],
                    top_k: int = 1, handle_impossible: bool = False) -> list[list[dict]]:
    """The ``top_k`` answers of each example from the spans of all its windows, best first.

    ``spans`` holds :func:`top_spans` results as arrays, one row per window; ``offsets`` the
    windows' token -> character offsets. The same text found in two overlapping windows counts
    once, with its best logit sum. Each answer: ``answer``, ``score`` (a probability), ``start``,
    ``end`` (characters of the context, ``context[start:end] == answer``). With
    ``handle_impossible`` the empty answer competes too, with the lowest "no answer" sum of the
    example's windows, and wins only when strictly best, as in ``utils_qa``.
    """
    found: list[dict[tuple[int, int], float]] = [{} for _ in contexts]
    null = [np.inf] * len(contexts)
    for w, ex in enumerate(example_index):
        null[ex] = min(null[ex], float(spans["null"][w]))
        for s, e, logit in zip(spans["start"][w], spans["end"][w], spans["score"][w]):
            if logit == -np.inf:
                break  # sorted: the rest are invalid spans too
            chars = (int(offsets[w][s][0]), int(offsets[w][e][1]))
            found[ex][chars] = max(float(logit), found[ex].get(chars, -np.inf))
    return [_ranked(candidates, context, top_k, null[ex] if handle_impossible else None)
            for ex, (candidates, context) in enumerate(zip(found, contexts))]


def _ranked(candidates: dict[tuple[int, int], float], context: str, top_k: int,
            null: float | None) -> list[dict]:
    """One example's best answers, each scored by the softmax over its ``N_BEST`` best logit sums."""
    ranked = sorted(candidates.items(), key=lambda c: -c[1])
    if null is not None:  # after the spans, so a tie goes to the span
        ranked = sorted([*ranked, ((0, 0), null)], key=lambda c: -c[1])
    if not ranked:  # no valid span anywhere: say so, with score 0
        return [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    ranked = ranked[:max(top_k, N_BEST)]
    logits = np.array([logit for _, logit in ranked])
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [{"answer": context[a:b], "score": float(p), "start": a, "end": b}
            for ((a, b), _), p in zip(ranked[:top_k], probs)]


def write_predictions(nbest: dict[str, list[dict]], out: Path) -> None:
    """predictions.json (id -> best answer) and nbest_predictions.json (id -> ranked answers), the
    files transformers' run_qa.py writes."""
    predictions = {i: answers[0]["answer"] for i, answers in nbest.items()}
    (out / "predictions.json").write_text(json.dumps(predictions, indent=2, ensure_ascii=False))
    (out / "nbest_predictions.json").write_text(json.dumps(nbest, indent=2, ensure_ascii=False))

"""Extractive QA decoding: from start/end logits to answers with scores and character spans.

Used by evaluation during training and by :func:`hfkit.inference.answer`, so both decode alike.
The n-best search is exact: every valid span of a window (inside the context, end >= start, at
most ``max_answer_length`` tokens) is scored at once on the device, and the best ``k`` are kept.
A span's score is p(start) * p(end), each a softmax over the window's context tokens (and the CLS
token when unanswerable questions are allowed), as the transformers pipeline scored it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

N_BEST = 20


def top_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor,
              max_answer_length: int, k: int = N_BEST, with_null: bool = False) -> dict[str, torch.Tensor]:
    """The ``k`` best spans of each window: token ``start``/``end`` [B, k], ``score`` [B, k], and
    ``null`` [B], the score of "no answer" (CLS as start and end; 0 unless ``with_null``).
    """
    context = context_mask.bool()
    allowed = context.clone()
    if with_null:
        allowed[:, 0] = True
    log_start = start_logits.float().masked_fill(~allowed, -torch.inf).log_softmax(-1)
    log_end = end_logits.float().masked_fill(~allowed, -torch.inf).log_softmax(-1)
    length = start_logits.shape[1]
    pos = torch.arange(length, device=start_logits.device)
    width = pos[None, :] - pos[:, None]  # end - start
    valid = (width >= 0) & (width < max_answer_length)
    valid = valid[None] & context[:, :, None] & context[:, None, :]
    pairs = (log_start[:, :, None] + log_end[:, None, :]).masked_fill(~valid, -torch.inf)
    best = pairs.flatten(1).topk(min(k, length * length), dim=-1)
    null = (log_start[:, 0] + log_end[:, 0]).exp() if with_null else log_start.new_zeros(len(pairs))
    # rows whose window holds no valid span give -inf -> NaN-free zeros
    return {"start": best.indices // length, "end": best.indices % length,
            "score": best.values.exp().nan_to_num(0.0), "null": null.nan_to_num(0.0)}


def collect_answers(spans: dict[str, np.ndarray], example_index: Sequence[int],
                    offsets: Sequence[Sequence[tuple[int, int]]], contexts: Sequence[str],
                    top_k: int = 1, handle_impossible: bool = False) -> list[list[dict]]:
    """The ``top_k`` answers of each example from the spans of all its windows, best first.

    ``spans`` holds :func:`top_spans` results as arrays, one row per window; ``offsets`` the
    windows' token -> character offsets. The same text found in two overlapping windows counts
    once, with its best score. Each answer: ``answer``, ``score``, ``start``, ``end`` (characters
    of the context, ``context[start:end] == answer``).
    """
    found: list[dict[tuple[int, int], float]] = [{} for _ in contexts]
    null = [1.0] * len(contexts)
    for w, ex in enumerate(example_index):
        null[ex] = min(null[ex], float(spans["null"][w]))
        for s, e, score in zip(spans["start"][w], spans["end"][w], spans["score"][w]):
            if score <= 0:
                break  # sorted: the rest are invalid spans too
            chars = (offsets[w][s][0], offsets[w][e][1])
            if score > found[ex].get(chars, 0.0):
                found[ex][chars] = float(score)
    results = []
    for ex, candidates in enumerate(found):
        ranked = [{"answer": contexts[ex][a:b], "score": sc, "start": a, "end": b}
                  for (a, b), sc in candidates.items()]
        if handle_impossible or not ranked:  # no valid span anywhere: say so, with score 0
            ranked.append({"answer": "", "score": null[ex] if handle_impossible else 0.0,
                           "start": 0, "end": 0})
        ranked.sort(key=lambda r: -r["score"])
        results.append(ranked[:top_k])
    return results

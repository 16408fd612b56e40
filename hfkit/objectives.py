"""What is optimised and measured: the task-specific part of the training loop.

An objective turns a batch into a loss (training) and into per-example values to gather
(evaluation), and turns the gathered values into metrics. The loop in ``training.py`` stays
the same for images, text classification and language modelling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from hfkit.metrics import load_metric


class Objective(Protocol):
    """What the loop asks of a task. ``train_loss``: the mean loss to backpropagate and [loss sum,
    correct, count] on the device, summed over the epoch without reading them back; ``eval_batch``:
    per-example tensors to gather across processes; ``metrics``: the gathered arrays (floats as
    float32) -> eval metrics and per-example predictions; ``train_summary``: the epoch's sums ->
    train metrics."""

    def train_loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eval_batch(self, model, batch) -> dict[str, torch.Tensor]: ...

    def metrics(self, gathered: dict[str, np.ndarray]) -> tuple[dict[str, Any], list]: ...

    def train_summary(self, loss_sum: float, correct: float, count: float) -> dict[str, float]: ...


class Classification:
    """Cross-entropy over class logits: timm models (image batches) or transformers (dict batches).

    In-memory image batches arrive as (uint8 images, labels, seed): ``batch_transform``
    (:class:`hfkit.data.transforms.BatchAugment`) augments and normalises them on the device.
    ``mixup`` (timm's ``Mixup``) mixes training images and their soft labels.
    """

    def __init__(self, channels_last: bool = False, label_smoothing: float = 0.0,
                 batch_transform=None, mixup=None, tta_hflip: bool = False, num_classes: int | None = None
                 ) -> None:
        self.channels_last, self.label_smoothing = channels_last, label_smoothing
        self.batch_transform, self.mixup, self.tta_hflip = batch_transform, mixup, tta_hflip
        self.num_classes = num_classes  # the model's: binary F1 for two, macro F1 for more

    def logits_and_labels(self, model, batch, train: bool = False, mix: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, labels, and the soft targets of a mixed batch (else None)."""
        if isinstance(batch, Mapping):  # tokenized text (BatchEncoding): labels travel inside
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            return model(**inputs).logits, batch["labels"], None
        images, labels = batch[0], batch[1]
        if self.batch_transform is not None:
            images = self.batch_transform(images, batch[2], train=train)
        targets = None
        if mix and self.mixup is not None and len(labels) % 2 == 0:
            images, targets = self.mixup(images, labels)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.tta_hflip and not train:  # the mean of the logits of each image and its mirror
            return (model(images) + model(images.flip(-1))) / 2, labels, targets
        return model(images), labels, targets

    def train_loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss, and [loss sum, correct, count] for the epoch's running metrics."""
        logits, labels, targets = self.logits_and_labels(model, batch, train=True, mix=True)
        if targets is not None:  # timm's Mixup already smoothed the soft targets
            loss = torch.sum(-targets * logits.float().log_softmax(-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        n = _count(labels)
        correct = (logits.argmax(-1) == labels).sum().float()
        return loss, torch.stack([loss.detach() * n, correct, n])

    def eval_batch(self, model, batch) -> dict[str, torch.Tensor]:
        logits, labels, _ = self.logits_and_labels(model, batch)
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        return {"loss": loss, "prediction": logits.argmax(-1), "label": labels}

    def metrics(self, gathered: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[int]]:
        preds = gathered["prediction"]
        return (classification_metrics(preds, gathered["label"], gathered["loss"], self.num_classes),
                preds.tolist())

    @staticmethod
    def train_summary(loss_sum: float, correct: float, count: float) -> dict[str, float]:
        return {"train_loss": loss_sum / max(count, 1), "train_accuracy": correct / max(count, 1)}


class CausalLM:
    """Next-token cross-entropy; reports loss and perplexity (exp of the mean token loss)."""

    def train_loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss = model(**batch).loss
        tokens = (batch["labels"][:, 1:] != -100).sum().float()
        return loss, torch.stack([loss.detach() * tokens, tokens.new_zeros(()), tokens])

    def eval_batch(self, model, batch) -> dict[str, torch.Tensor]:
        # per-example losses (not one number per batch) so gather_for_metrics can drop the
        # duplicated examples of the last uneven batch in distributed runs
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        labels = batch["labels"][:, 1:]
        token_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                     reduction="none", ignore_index=-100).view(labels.shape)
        mask = (labels != -100).float()
        return {"loss_sum": (token_loss * mask).sum(1), "tokens": mask.sum(1)}

    def metrics(self, gathered: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[int]]:
        # per-example mean token losses, weighted by their token counts: the corpus token mean
        tokens = gathered["tokens"]
        losses = gathered["loss_sum"] / np.maximum(tokens, 1)
        return _prefixed(metric("perplexity").compute(losses=losses, weights=tokens)), []

    @staticmethod
    def train_summary(loss_sum: float, _: float, tokens: float) -> dict[str, float]:
        loss = loss_sum / max(tokens, 1)
        return {"train_loss": loss, "train_perplexity": safe_exp(loss)}


@functools.cache
def metric(name: str):
    """hfkit's local evaluate module ``name``, loaded once, kept in memory (no cache files)."""
    return load_metric(name, keep_in_memory=True)


def _count(batched: torch.Tensor) -> torch.Tensor:
    """The batch size as a float tensor on the batch's device, made there (``new_tensor`` would
    copy a Python number to the GPU and wait for it)."""
    return torch.full((), batched.shape[0], dtype=torch.float32, device=batched.device)


def _prefixed(values: dict[str, float]) -> dict[str, float]:
    return {f"eval_{k}": float(v) for k, v in values.items()}


def safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def classification_metrics(preds: np.ndarray, labels: np.ndarray, losses: np.ndarray,
                           num_classes: int | None = None) -> dict[str, Any]:
    """eval_loss, eval_accuracy, eval_f1 (binary for a model of two classes, else macro) and
    eval_per_class_accuracy (None for a class the data lacks): in training's evaluation and in
    ``hfkit evaluate`` alike. ``num_classes`` is the model's (else the largest index seen + 1):
    data holding some of its classes is still scored as a classification over all of them."""
    num_classes = num_classes or int(max(preds.max(initial=0), labels.max(initial=0))) + 1
    return {"eval_loss": float(losses.mean()),
            **_prefixed(metric("accuracy").compute(predictions=preds, references=labels)),
            **_prefixed(metric("f1").compute(predictions=preds, references=labels,
                                             average="binary" if num_classes == 2 else "macro")),
            "eval_per_class_accuracy": per_class_accuracy(preds, labels, num_classes)}


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    return [float((preds[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(num_classes)]


class ExtractiveQA:
    """Start/end cross-entropy over the windows of a context; EM and F1 of the decoded answers.

    Evaluation keeps only each window's best spans (:func:`hfkit.qa.top_spans`, on the device),
    so gathering never moves full logits; ``metrics`` joins the windows back into one answer per
    question, through the offsets kept here, ranking spans by their logit sums across windows as
    ``run_qa.py`` does, so EM/F1 compare with its numbers.
    """

    NBEST_KEPT = 10  # per question, in nbest_predictions.json

    def __init__(self, examples, windows, max_answer_length: int = 30, scorer: str = "auto") -> None:
        self.ids, self.contexts = list(examples["id"]), list(examples["context"])
        self.answers = list(examples["answers"])
        self.example_index = list(windows["example_index"])
        self.offsets = list(windows["offset_mapping"])
        self.max_answer_length = max_answer_length
        self.scorer = scorer if scorer != "auto" else qa_scorer(self.contexts)

    @staticmethod
    def model_inputs(batch) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k not in ("context_mask", "feature_index")}

    def train_loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss = model(**self.model_inputs(batch)).loss
        n = _count(batch["input_ids"])
        return loss, torch.stack([loss.detach().float() * n, n.new_zeros(()), n])

    def eval_batch(self, model, batch) -> dict[str, torch.Tensor]:
        from hfkit.qa import top_spans

        out = model(**self.model_inputs(batch))
        spans = top_spans(out.start_logits, out.end_logits, batch["context_mask"], self.max_answer_length)
        return {"feature_index": batch["feature_index"], **spans}

    def metrics(self, gathered: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[dict]]:
        """EM/F1 (0-100), and per question its n-best answers (for nbest_predictions.json)."""
        nbest = self.decode(gathered)
        predictions = [{"id": i, "prediction_text": best[0]["answer"]} for i, best in zip(self.ids, nbest)]
        references = [{"id": i, "answers": a} for i, a in zip(self.ids, self.answers)]
        scores = metric(self.scorer).compute(predictions=predictions, references=references)
        return _prefixed({"exact_match": scores["exact_match"], "f1": scores["f1"]}), [
            {"id": i, "nbest": best} for i, best in zip(self.ids, nbest)]

    def decode(self, gathered: dict[str, np.ndarray]) -> list[list[dict]]:
        from hfkit.qa import collect_answers

        order = np.argsort(gathered["feature_index"], kind="stable")
        spans = {k: gathered[k][order] for k in ("start", "end", "score", "null")}
        index = gathered["feature_index"][order]
        return collect_answers(spans, [self.example_index[w] for w in index],
                               [self.offsets[w] for w in index], self.contexts, top_k=self.NBEST_KEPT)

    @staticmethod
    def train_summary(loss_sum: float, _: float, count: float) -> dict[str, float]:
        return {"train_loss": loss_sum / max(count, 1)}


def qa_scorer(contexts: list[str]) -> str:
    """``cmrc2018`` (character-level EM/F1) when most contexts hold CJK characters, else ``squad``."""
    sample = contexts[:: max(1, len(contexts) // 100)]
    cjk = sum(any("\u4e00" <= ch <= "\u9fff" for ch in c[:200]) for c in sample)
    return "cmrc2018" if cjk * 2 > len(sample) else "squad"

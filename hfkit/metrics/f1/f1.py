"""F1 score, the harmonic mean of precision and recall (like the Hub ``f1``, without scikit-learn).

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("f1")``.
Per class, F1 = 2 TP / (2 TP + FP + FN), and 0 when that is 0 / 0 (scikit-learn's
``zero_division=0``).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
The F1 score is the harmonic mean of precision and recall:
F1 = 2 * (precision * recall) / (precision + recall), which per class equals 2 TP / (2 TP + FP + FN).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    labels (`list` of `int`): Classes to score with average != 'binary', in this order for
        average=None. Defaults to every class found in predictions or references (so with
        'macro', classes absent from both are ignored).
    pos_label (`int`): The positive class with average='binary'. Defaults to 1.
    average (`str`): How per-class scores are combined. Defaults to 'binary'.
        - 'binary': the F1 of `pos_label` only; the data must have at most two classes.
        - 'micro': F1 of the total TP, FP and FN over all classes (with every class
          scored, this equals accuracy).
        - 'macro': the unweighted mean of the per-class F1 scores.
        - 'weighted': the mean of the per-class F1 scores weighted by each class's number of
          references (its support).
        - None: the list of per-class F1 scores.
    sample_weight (`list` of `float`): Weight of each example. Defaults to None (all 1).

Returns:
    f1 (`float`, or `list` of `float` with average=None): between 0 and 1, higher is better.

Example:
    >>> f1 = hfkit.metrics.load_metric("f1")
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'f1': 0.5}
"""

AVERAGES = ("binary", "micro", "macro", "weighted", None)


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "references": datasets.Value("int64"),
            }),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/f1"],
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary",
                 sample_weight=None):
        if average not in AVERAGES:
            raise ValueError(f"f1: average must be one of {AVERAGES}, got {average!r}")
        y_pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
        y_true = np.asarray(references, dtype=np.int64).reshape(-1)
        if y_pred.size == 0:
            raise ValueError("f1: no predictions to score")
        weights = _weights(sample_weight, len(y_pred))
        present = np.union1d(y_true, y_pred)
        if average == "binary":
            if len(present) > 2:
                raise ValueError(f"f1: average='binary' needs at most two classes, got {present.tolist()}; "
                                 "use average='macro', 'micro' or 'weighted'")
            if pos_label not in present and len(present) == 2:
                raise ValueError(f"f1: pos_label={pos_label} is not one of the labels {present.tolist()}")
            classes = np.array([pos_label], dtype=np.int64)
        elif labels is None:
            classes = present
        else:
            classes = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(np.unique(classes)) != len(classes) or len(classes) == 0:
                raise ValueError(f"f1: labels must be distinct and not empty, got {classes.tolist()}")

        tp, pred_sum, true_sum = _counts(y_true, y_pred, weights, classes)
        if average == "micro":
            return {"f1": _ratio(2 * tp.sum(), true_sum.sum() + pred_sum.sum())}
        denominator = true_sum + pred_sum
        # float output: bincount of an empty selection comes back as int64 even with weights
        per_class = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
        if average is None:
            return {"f1": per_class.tolist()}
        if average == "binary":
            return {"f1": float(per_class[0])}
        if average == "weighted":
            total = true_sum.sum()
            return {"f1": float((per_class * true_sum).sum() / total) if total > 0 else 0.0}
        return {"f1": float(per_class.mean())}


def _counts(y_true, y_pred, weights, classes):
    """Per class of ``classes``: (weighted) true positives, predicted count, reference count."""
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]

    def index(y):
        pos = np.minimum(np.searchsorted(sorted_classes, y), len(classes) - 1)
        return order[pos], sorted_classes[pos] == y

    true_idx, true_ok = index(y_true)
    pred_idx, pred_ok = index(y_pred)
    hit = true_ok & (y_true == y_pred)
    k = len(classes)
    tp = np.bincount(true_idx[hit], weights=weights[hit], minlength=k)
    pred_sum = np.bincount(pred_idx[pred_ok], weights=weights[pred_ok], minlength=k)
    true_sum = np.bincount(true_idx[true_ok], weights=weights[true_ok], minlength=k)
    return tp, pred_sum, true_sum


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator > 0 else 0.0


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if len(weights) != n:
        raise ValueError(f"sample_weight has {len(weights)} values for {n} predictions")
    if (weights < 0).any():
        raise ValueError("sample_weight must be >= 0")
    return weights

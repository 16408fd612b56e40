"""Accuracy: the share of predictions equal to their references (like the Hub ``accuracy``).

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("accuracy")``.
Computed with numpy only, without scikit-learn.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy is the proportion of correct predictions among all predictions:
Accuracy = (TP + TN) / (TP + TN + FP + FN), or, for any number of classes,
the (weighted) share of examples whose prediction equals the reference.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    normalize (`bool`): If False, return the (weighted) number of correct predictions
        instead of their share. Defaults to True.
    sample_weight (`list` of `float`): Weight of each example. Defaults to None (all 1).

Returns:
    accuracy (`float`): between 0 and 1 with normalize=True (higher is better), else the
        (weighted) count of correct predictions.

Example:
    >>> accuracy = hfkit.metrics.load_metric("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "references": datasets.Value("int64"),
            }),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/accuracy"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy: no predictions to score")
        weights = _weights(sample_weight, len(predictions))
        correct = float(np.sum(weights * (predictions == references)))
        return {"accuracy": correct / float(weights.sum()) if normalize else correct}


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if len(weights) != n:
        raise ValueError(f"sample_weight has {len(weights)} values for {n} predictions")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("sample_weight must be >= 0 with a positive sum")
    return weights

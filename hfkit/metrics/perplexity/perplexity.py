"""Perplexity from losses already computed: exp of the (token-weighted) mean cross-entropy.

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("perplexity")``.

Unlike the Hub ``perplexity`` metric, which loads a model and runs it over texts itself, this
one takes the cross-entropy losses (natural log) that the evaluation loop has already computed:
either one loss per token, or one mean loss per batch with ``weights`` = its number of
predicted tokens. ``weights`` is optional and defaults to 1 for each loss.
"""

import math

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Perplexity = exp(mean cross-entropy per token), from losses computed by the caller.
With weights w_i (token counts) the mean is sum(w_i * loss_i) / sum(w_i).
"""

_KWARGS_DESCRIPTION = """
Args:
    losses (`list` of `float`): Cross-entropy losses in nats: per token, or per batch means.
    weights (`list` of `float`, optional): Number of tokens behind each loss. Defaults to 1 each.

Returns:
    perplexity (`float`): exp(loss), lower is better (inf when that overflows).
    loss (`float`): the weighted mean loss.

Example:
    >>> perplexity = hfkit.metrics.load_metric("perplexity")
    >>> perplexity.compute(losses=[2.0, 3.0], weights=[30, 10])
    {'perplexity': 9.487735836358526, 'loss': 2.25}
"""


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "losses": datasets.Value("float64"),
                "weights": datasets.Value("float64"),
            }),
            reference_urls=["https://huggingface.co/docs/transformers/perplexity"],
        )

    # `weights` is optional: fill in ones, so both columns are always stored.
    def add_batch(self, *, losses=None, weights=None, **kwargs):
        """Add a batch of losses, with their token counts as ``weights`` (default 1 each)."""
        return super().add_batch(losses=losses, weights=_default_weights(losses, weights), **kwargs)

    def add(self, *, losses=None, weights=None, **kwargs):
        """Add one loss, with its token count as ``weights`` (default 1)."""
        if losses is not None and weights is None:
            weights = 1.0
        return super().add(losses=losses, weights=weights, **kwargs)

    def compute(self, *, losses=None, weights=None, **kwargs):
        """Perplexity of the losses added so far and of ``losses`` (weights default to 1)."""
        return super().compute(losses=losses, weights=_default_weights(losses, weights), **kwargs)

    def _compute(self, losses, weights):
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if losses.size == 0:
            raise ValueError("perplexity: no losses given")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("perplexity: weights must be >= 0 with a positive sum")
        loss = float(np.sum(weights * losses) / np.sum(weights))
        return {"perplexity": math.exp(loss) if loss < 709 else math.inf, "loss": loss}


def _default_weights(losses, weights):
    if losses is None or weights is not None:
        return weights
    return [1.0] * len(losses)

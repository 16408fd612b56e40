"""hfkit's local evaluate metrics: hand-worked cases, offline loading, and a numpy cross-check."""

from __future__ import annotations

import math
import socket

import evaluate
import numpy as np
import pytest

from hfkit.metrics import available_metrics, load_metric


@pytest.fixture
def offline(monkeypatch):
    """No Hub and no sockets: a metric that tried to download anything would fail."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


@pytest.fixture
def metric(offline):
    return lambda name: load_metric(name, keep_in_memory=True)


def test_available_metrics():
    assert available_metrics() == ["accuracy", "cmrc2018", "f1", "perplexity", "squad"]


@pytest.mark.parametrize("name", ["accuracy", "cmrc2018", "f1", "perplexity", "squad"])
def test_loads_offline(metric, name):
    module = metric(name)
    assert isinstance(module, evaluate.EvaluationModule)
    assert module.name == name


def test_unknown_metric_lists_the_available_ones(offline):
    with pytest.raises(ValueError,
                       match="unknown metric 'acuracy'.*accuracy, cmrc2018, f1, perplexity, squad"):
        load_metric("acuracy")
    with pytest.raises(ValueError, match="Available metrics: accuracy, cmrc2018, f1, perplexity, squad"):
        load_metric("bleu")


# ---------------------------------------------------------------------------------------------
# Accuracy


def test_accuracy_three_of_four(metric):
    accuracy = metric("accuracy")
    assert accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}


def test_accuracy_normalize_and_sample_weight(metric):
    accuracy = metric("accuracy")
    preds, refs = [1, 2, 3, 4], [1, 2, 0, 0]
    assert accuracy.compute(predictions=preds, references=refs, normalize=False) == {"accuracy": 2.0}
    # correct examples weigh 1 + 3 out of 1 + 3 + 2 + 2
    weighted = accuracy.compute(predictions=preds, references=refs, sample_weight=[1, 3, 2, 2])
    assert weighted["accuracy"] == pytest.approx(0.5)


def test_accuracy_accumulates_batches(metric):
    accuracy = metric("accuracy")
    accuracy.add_batch(predictions=[0, 1], references=[0, 0])
    accuracy.add_batch(predictions=[2, 2, 2], references=[2, 2, 1])
    assert accuracy.compute()["accuracy"] == pytest.approx(3 / 5)


# ---------------------------------------------------------------------------------------------
# F1

# Confusion matrix (rows: reference, columns: prediction) for labels 0 and 1:
#             pred 0  pred 1
#   ref 0       2       1        TN = 2, FP = 1
#   ref 1       2       3        FN = 2, TP = 3
BINARY_REFS = [0, 0, 0, 1, 1, 1, 1, 1]
BINARY_PREDS = [0, 0, 1, 0, 0, 1, 1, 1]


def test_binary_f1_from_confusion_matrix(metric):
    f1 = metric("f1")
    # precision 3/4, recall 3/5: F1 = 2 * 0.75 * 0.6 / 1.35 = 2/3 = 2 TP / (2 TP + FP + FN) = 6/9
    assert f1.compute(predictions=BINARY_PREDS, references=BINARY_REFS)["f1"] == pytest.approx(2 / 3)
    # class 0 as positive: TP = 2, FP = 2, FN = 1: F1 = 4 / 7
    result = f1.compute(predictions=BINARY_PREDS, references=BINARY_REFS, pos_label=0)
    assert result["f1"] == pytest.approx(4 / 7)


def test_binary_f1_rejects_three_classes_and_unknown_pos_label(metric):
    f1 = metric("f1")
    with pytest.raises(ValueError, match="average='binary' needs at most two classes"):
        f1.compute(predictions=[0, 1, 2], references=[0, 1, 1])
    with pytest.raises(ValueError, match="pos_label=1 is not one of the labels"):
        f1.compute(predictions=[0, 2, 2], references=[0, 2, 0])


# Three classes 0, 1 and 3 (class 2 appears nowhere):
#   class 0: TP 2, FP 1, FN 0 -> F1 = 4/5
#   class 1: TP 1, FP 1, FN 2 -> F1 = 2/5
#   class 3: TP 1, FP 1, FN 1 -> F1 = 1/2
MULTI_REFS = [0, 0, 1, 1, 1, 3, 3]
MULTI_PREDS = [0, 0, 1, 0, 3, 3, 1]


def test_macro_f1_three_classes(metric):
    f1 = metric("f1")
    macro = f1.compute(predictions=MULTI_PREDS, references=MULTI_REFS, average="macro")["f1"]
    assert macro == pytest.approx((4 / 5 + 2 / 5 + 1 / 2) / 3)  # class 2 is ignored, not a 0
    # naming class 2 explicitly scores it as 0, like scikit-learn's labels=
    with_2 = f1.compute(predictions=MULTI_PREDS, references=MULTI_REFS, average="macro", labels=[0, 1, 2, 3])
    assert with_2["f1"] == pytest.approx((4 / 5 + 2 / 5 + 0 + 1 / 2) / 4)
    per_class = f1.compute(predictions=MULTI_PREDS, references=MULTI_REFS, average=None)["f1"]
    assert per_class == pytest.approx([4 / 5, 2 / 5, 1 / 2])


def test_micro_and_weighted_f1_three_classes(metric):
    f1 = metric("f1")
    micro = f1.compute(predictions=MULTI_PREDS, references=MULTI_REFS, average="micro")["f1"]
    assert micro == pytest.approx(4 / 7)  # single-label, every class scored: micro F1 = accuracy
    weighted = f1.compute(predictions=MULTI_PREDS, references=MULTI_REFS, average="weighted")["f1"]
    assert weighted == pytest.approx((2 * 4 / 5 + 3 * 2 / 5 + 2 * 1 / 2) / 7)  # supports 2, 3, 2


def test_f1_rejects_an_unknown_average(metric):
    with pytest.raises(ValueError, match="average must be one of"):
        metric("f1").compute(predictions=[0, 1], references=[0, 1], average="samples")


# ---------------------------------------------------------------------------------------------
# Cross-check on random data against straightforward numpy formulas


def reference_f1(refs, preds, average, weights, pos_label=1):
    """Precision and recall per class with boolean masks, then their harmonic mean."""
    if average == "binary":
        classes = [pos_label]
    else:
        classes = sorted(set(refs.tolist()) | set(preds.tolist()))
    scores, supports, tps, true_counts, pred_counts = [], [], [], [], []
    for c in classes:
        tp = weights[(preds == c) & (refs == c)].sum()
        predicted, actual = weights[preds == c].sum(), weights[refs == c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        supports.append(actual)
        tps.append(tp)
        true_counts.append(actual)
        pred_counts.append(predicted)
    if average == "micro":
        precision, recall = sum(tps) / sum(pred_counts), sum(tps) / sum(true_counts)
        return 2 * precision * recall / (precision + recall)
    if average == "weighted":
        return float(np.average(scores, weights=supports))
    return float(np.mean(scores))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("average,num_classes", [("binary", 2), ("micro", 5), ("macro", 5),
                                                 ("weighted", 5), ("macro", 12)])
def test_f1_and_accuracy_match_numpy_on_random_data(metric, average, num_classes, weighted):
    rng = np.random.default_rng(1234 + num_classes)
    refs = rng.integers(0, num_classes, size=300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, num_classes, size=300))
    weights = rng.uniform(0.1, 2.0, size=300) if weighted else np.ones(300)
    sample_weight = weights.tolist() if weighted else None

    f1 = metric("f1").compute(predictions=preds, references=refs, average=average,
                              sample_weight=sample_weight)["f1"]
    assert f1 == pytest.approx(reference_f1(refs, preds, average, weights), abs=1e-12)

    accuracy = metric("accuracy").compute(predictions=preds, references=refs,
                                          sample_weight=sample_weight)["accuracy"]
    assert accuracy == pytest.approx(np.average(preds == refs, weights=weights), abs=1e-12)
    if average == "micro":
        assert f1 == pytest.approx(accuracy, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Perplexity


def test_perplexity_of_a_constant_loss(metric):
    result = metric("perplexity").compute(losses=[math.log(4)] * 5)
    assert result["perplexity"] == pytest.approx(4.0)
    assert result["loss"] == pytest.approx(math.log(4))


def test_perplexity_weighted_mean(metric):
    perplexity = metric("perplexity")
    # batch means 2.0 over 30 tokens and 3.0 over 10 tokens: (60 + 30) / 40 = 2.25
    result = perplexity.compute(losses=[2.0, 3.0], weights=[30, 10])
    assert result["loss"] == pytest.approx(2.25)
    assert result["perplexity"] == pytest.approx(math.exp(2.25))
    # the same tokens given one loss each
    per_token = perplexity.compute(losses=[2.0] * 30 + [3.0] * 10)
    assert per_token == pytest.approx(result)


def test_perplexity_accumulates_batches_with_and_without_weights(metric):
    perplexity = metric("perplexity")
    perplexity.add_batch(losses=[1.0, 2.0])  # weights 1, 1
    perplexity.add_batch(losses=[4.0], weights=[2])
    perplexity.add(losses=0.0)
    assert perplexity.compute()["loss"] == pytest.approx((1 + 2 + 8 + 0) / 5)


def test_perplexity_rejects_zero_weights(metric):
    with pytest.raises(ValueError, match="positive sum"):
        metric("perplexity").compute(losses=[1.0], weights=[0])


def test_f1_without_any_true_positive_is_zero():
    """All predictions wrong: the empty selection must not break the division (regression)."""
    from hfkit.metrics import load_metric

    f1 = load_metric("f1", keep_in_memory=True)
    assert f1.compute(predictions=[0, 0, 0], references=[1, 1, 1])["f1"] == 0.0

"""SQuAD v1.1 exact match and F1, as defined by the official scorer (``evaluate-v1.1.py``).

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("squad")``; same inputs and
outputs as the Hub ``squad`` metric. Self-contained on purpose (``evaluate`` copies this file alone
into its cache).

Answers are normalized (lower-cased, ``string.punctuation`` removed, the articles a/an/the removed,
whitespace collapsed), split on whitespace, and F1 counts the tokens the prediction and the answer
share as bags (multisets), in any order. For Chinese text, where words are not separated by spaces,
see the ``cmrc2018`` metric.
"""

import logging
import re
import string
from collections import Counter

import datasets
import evaluate

logger = logging.getLogger(__name__)

_CITATION = """
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP 2016",
    year = "2016",
    pages = "2383--2392",
}
"""

_DESCRIPTION = """
The metrics of the Stanford Question Answering Dataset (SQuAD v1.1), with the definitions of its
official scorer. Exact match is 1 when the normalized prediction equals a normalized reference
answer; F1 is the harmonic mean of the precision and recall of the tokens they share (as bags of
tokens). Both take the best reference answer and are averaged over the questions on a 0-100 scale;
a question without a prediction scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `dict`): One per answered question, with keys
        - 'id' (`str`): the question's id,
        - 'prediction_text' (`str`): the predicted answer.
    references (`list` of `dict`): One per question, with keys
        - 'id' (`str`): the question's id,
        - 'answers' (`dict`): {'text': list of reference answers, 'answer_start': list of `int`}.
    Predictions are matched to references by id, not by position (evaluate still wants as many of
    each): a question whose id has no prediction scores 0, and a prediction whose id is no
    question's is ignored, as in the official scorer.

Returns:
    exact_match (`float`): share of questions whose normalized prediction equals a normalized
        reference answer, 0 to 100.
    f1 (`float`): mean over the questions of the best token F1, 0 to 100.

Example:
    >>> squad = hfkit.metrics.load_metric("squad")
    >>> squad.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "the Eiffel Tower"}],
    ...     references=[{"id": "q1", "answers": {"text": ["Eiffel Tower."], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text):
    """Lower-case, remove punctuation, then the articles a/an/the, and collapse whitespace."""
    text = "".join(char for char in str(text).lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_list(answers):
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("squad: a question needs at least one reference answer")
    return answers


def _token_f1(prediction_tokens, answer_tokens):
    common = Counter(prediction_tokens) & Counter(answer_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction, answers):
    """The best token F1 (0 to 1) of ``prediction`` over ``answers`` (a list or one string)."""
    prediction_tokens = normalize_answer(prediction).split()
    return max(_token_f1(prediction_tokens, normalize_answer(answer).split())
               for answer in _answer_list(answers))


def em_score(prediction, answers):
    """1 if the normalized prediction equals one of the normalized ``answers``, else 0."""
    prediction = normalize_answer(prediction)
    return int(any(normalize_answer(answer) == prediction for answer in _answer_list(answers)))


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({
                        "text": datasets.Value("string"),
                        "answer_start": datasets.Value("int32"),
                    }),
                },
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("squad: no references to score")
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        f1 = em = 0.0
        unanswered = 0
        for reference in references:
            if reference["id"] not in predicted:
                unanswered += 1  # scores 0, as in the official scorer
                continue
            prediction = predicted[reference["id"]]
            answers = reference["answers"]["text"]
            f1 += f1_score(prediction, answers)
            em += em_score(prediction, answers)
        if unanswered:
            logger.warning("squad: %d of %d questions have no prediction and score 0",
                           unanswered, len(references))
        total = len(references)
        return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}

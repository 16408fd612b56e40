"""CMRC 2018 exact match and F1, as defined by the official scorer (``cmrc2018_evaluate.py``).

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("cmrc2018")``.
Self-contained on purpose (``evaluate`` copies this file alone into its cache), and without nltk:
the official scorer's ``nltk.word_tokenize`` is replaced by :func:`word_tokenize` below, a short
port of nltk's Treebank regex rules, which only ever sees the runs of non-CJK characters.

Differences from SQuAD v1.1 (the ``squad`` metric): each CJK character (U+4E00-U+9FA5) is a token
of its own; F1 comes from the longest common *contiguous* run of tokens, not from the bag of
common tokens; only a fixed set of punctuation is removed (``SP_CHAR``: ASCII ``. , ! ? ; ' "``
are kept); no English articles are dropped; EM compares the texts with that punctuation removed,
so whitespace inside them still counts.
"""

import logging
import re

import datasets
import evaluate

logger = logging.getLogger(__name__)

_CITATION = """
@inproceedings{cui-emnlp2019-cmrc2018,
    title = "A Span-Extraction Dataset for {C}hinese Machine Reading Comprehension",
    author = "Cui, Yiming and Liu, Ting and Che, Wanxiang and Xiao, Li and Chen, Zhipeng and Ma, Wentao
        and Wang, Shijin and Hu, Guoping",
    booktitle = "Proceedings of EMNLP-IJCNLP 2019",
    year = "2019",
    pages = "5886--5891",
}
"""

_DESCRIPTION = """
The metrics of the CMRC 2018 Chinese span-extraction reading comprehension task, with the
definitions of its official scorer. Text is lower-cased and stripped. For F1, each CJK character is
a token and each run of other characters is split into words; punctuation of a fixed list is
dropped; F1 = 2PR / (P + R) with P and R the length of the longest common contiguous token
sequence over the lengths of the prediction and of the answer. EM is 1 when the prediction equals
an answer once the same punctuation is removed from both. Both take the best reference answer, and
are averaged over the questions on a 0-100 scale; a question without a prediction scores 0.
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
    exact_match (`float`): share of questions whose prediction matches a reference exactly
        (up to case, surrounding whitespace and the listed punctuation), 0 to 100.
    f1 (`float`): mean over the questions of the best longest-common-substring F1, 0 to 100.

Example:
    >>> cmrc2018 = hfkit.metrics.load_metric("cmrc2018")
    >>> cmrc2018.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "北京大学"}],
    ...     references=[{"id": "q1", "answers": {"text": ["北京大学。"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

# The official scorer's list, in its order. It holds '……' (two characters), which the per-character
# test `char in sp_char` can never match, so the official code keeps the ellipsis character '…'.
# CMRC 2018's description lists '……' among the removed punctuation, so here '…' (U+2026) is removed
# too: the only deliberate departure from the official code (on the dev set's answers it changes
# nothing, none of them holds '…').
OFFICIAL_SP_CHAR = ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！",
                    "“", "”", "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～",
                    "『", "』"]
SP_CHAR = frozenset(c for c in OFFICIAL_SP_CHAR if len(c) == 1) | {"…"}

# nltk.word_tokenize, approximated for the runs of non-CJK characters (the official scorer calls it
# on each run) by a short port of the substitution rules of nltk's NLTKWordTokenizer (Treebank):
# split on whitespace; split off ! ? ; @ # $ % & * ( ) [ ] { } < > and quotes; split off ',' and
# ':' except before a digit (1,000), '..' and longer, and only the final '.' of the run (3.5, a.b and
# u.s. mid-run stay whole); rewrite '"' as `` (opening) or '' (closing); split the clitics 's 'm 'd
# 'll 're 've n't off their word (don't -> do n't). Not reproduced: nltk's sentence splitting (punkt)
# before those rules, and its rare contractions (cannot -> can not, gonna, ...). Most characters that
# nltk treats specially never get here anyway: '-' ':' '_' '*' '/' and the like are in SP_CHAR, so
# they are tokens of their own, or removed, before any run is tokenized.
def _rules(*rules):
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


_OPENING_AND_PUNCTUATION_RULES = _rules(
    (r"([«“‘„]|`+)", r" \1 "),                            # opening quotes
    (r'^"', "``"),
    (r"(``)", r" \1 "),
    (r'([ (\[{<])("|\'{2})', r"\1 `` "),
    (r"(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),
    (r"([:,])([^\d])", r" \1 \2"),                       # ',' and ':' unless before a digit
    (r"([:,])$", r" \1 "),
    (r"\.{2,}", r" \g<0> "),                               # ...
    (r"[;@#$%&?!*\u2012-\u2015\]\[(){}<>]", r" \g<0> "),
    (r'([^.])(\.)([\])}>"\'»”’]*)\s*$', r"\1 \2 \3 "),    # the final period only
    (r"([^'])' ", r"\1 ' "),
)
_CLOSING_RULES = _rules(                                  # applied with a space around the text
    (r"([»”’])", r" \1 "),                                 # closing quotes
    (r"''", " '' "),
    (r'"', " '' "),
    (r"\s+", " "),
    (r"([^' ])('s|'m|'d|') ", r"\1 \2 "),                  # clitics: it's -> it 's
    (r"([^' ])('ll|'re|'ve|n't) ", r"\1 \2 "),             # don't -> do n't
)


def word_tokenize(text):
    """Split ``text`` (lower-cased, no CJK) into words and punctuation, approximating nltk's."""
    for pattern, replacement in _OPENING_AND_PUNCTUATION_RULES:
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _CLOSING_RULES:
        text = pattern.sub(replacement, text)
    return text.split()


def _is_cjk(char):
    return "\u4e00" <= char <= "\u9fa5"  # the official re.search(r'[\u4e00-\u9fa5]', char)


def mixed_segmentation(text, rm_punc=False):
    """Tokens of ``text``: each CJK character and each SP_CHAR alone, words in between.

    With ``rm_punc`` the SP_CHAR characters are dropped. As in the official code, a dropped
    character does not end the run of non-CJK characters around it: 'ab-cd' gives ['abcd'].
    """
    segments, run = [], []
    for char in str(text).lower().strip():
        if rm_punc and char in SP_CHAR:
            continue
        if _is_cjk(char) or char in SP_CHAR:
            if run:
                segments.extend(word_tokenize("".join(run)))
                run = []
            segments.append(char)
        else:
            run.append(char)
    if run:
        segments.extend(word_tokenize("".join(run)))
    return segments


def remove_punctuation(text):
    """``text`` lower-cased and stripped, without the SP_CHAR characters (whitespace inside kept)."""
    return "".join(char for char in str(text).lower().strip() if char not in SP_CHAR)


def longest_common_substring(a, b):
    """Length of the longest run of consecutive items found in both sequences ``a`` and ``b``.

    The official ``find_lcs``, which also returned the run itself.
    """
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _answer_list(answers):
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("cmrc2018: a question needs at least one reference answer")
    return answers


def f1_score(prediction, answers):
    """The official ``calc_f1_score``: the best F1 (0 to 1) over ``answers`` (a list or one string)."""
    prediction_segments = mixed_segmentation(prediction, rm_punc=True)
    scores = []
    for answer in _answer_list(answers):
        answer_segments = mixed_segmentation(answer, rm_punc=True)
        lcs_length = longest_common_substring(answer_segments, prediction_segments)
        if lcs_length == 0:
            scores.append(0.0)
            continue
        precision = lcs_length / len(prediction_segments)
        recall = lcs_length / len(answer_segments)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def em_score(prediction, answers):
    """The official ``calc_em_score``: 1 if the prediction equals one of ``answers``, else 0."""
    prediction = remove_punctuation(prediction)
    return int(any(remove_punctuation(answer) == prediction for answer in _answer_list(answers)))


class Cmrc2018(evaluate.Metric):
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
            reference_urls=["https://github.com/ymcui/cmrc2018"],
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("cmrc2018: no references to score")
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
            logger.warning("cmrc2018: %d of %d questions have no prediction and score 0",
                           unanswered, len(references))
        total = len(references)
        return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}

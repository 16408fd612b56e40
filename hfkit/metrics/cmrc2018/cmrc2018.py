"""CMRC 2018 exact match and F1, as defined by the official scorer (``cmrc2018_evaluate.py``).

A local ``evaluate`` module: load it with ``hfkit.metrics.load_metric("cmrc2018")``.
Self-contained on purpose (``evaluate`` copies this file alone into its cache), and without nltk,
whose sentence splitter needs a model downloaded apart from it: the official scorer's
``nltk.word_tokenize`` (Punkt sentences, then NLTKWordTokenizer words) is :func:`word_tokenize`
below, a port of both for what they see here, the lower-cased runs of non-CJK characters.

Differences from SQuAD v1.1 (the ``squad`` metric): each CJK character (U+4E00-U+9FA5) is a token
of its own; F1 comes from the longest common *contiguous* run of tokens, not from the bag of
common tokens; only a fixed set of punctuation is removed (``SP_CHAR``: ASCII ``. , ! ? ; ' "``
are kept, and so is '…'); no English articles are dropped; EM compares the texts with that
punctuation removed, so whitespace inside them still counts.
"""

import logging
import re
import string

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

# The official scorer's list, in its order. It tests one character at a time (`char in sp_char`), so
# its two-character '……' never matches: '…' (U+2026) is kept, in the run of non-CJK characters.
OFFICIAL_SP_CHAR = ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！",
                    "“", "”", "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～",
                    "『", "』"]
SP_CHAR = frozenset(c for c in OFFICIAL_SP_CHAR if len(c) == 1)


# nltk.word_tokenize without nltk (whose Punkt model is a separate download): Punkt splits the run into
# sentences, then NLTKWordTokenizer splits each sentence into words. Ported from nltk 3.10.4 for what
# reaches it here: lower-cased runs without CJK characters (mixed_segmentation lower-cases first).
# Checked token for token against nltk 3.10.4 with its English punkt_tab model on every run of the
# CMRC 2018 dev contexts and on random text around periods, quotes and brackets.
def word_tokenize(text):
    """``nltk.word_tokenize(text)`` for lower-cased ``text``: words of each Punkt sentence."""
    return [word for sentence in sent_tokenize(text) for word in treebank_tokenize(sentence)]


def _rules(*rules):
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


# NLTKWordTokenizer's rules, in its order. nltk writes the first final-period rule with a possessive
# '*+' (Python 3.11+); as '\s*$' must follow, the plain '*' matches the same texts.
_STARTING_QUOTES = _rules(
    (r"([«“‘„]|[`]+)", r" \1 "),
    (r'^"', r"``"),
    (r"(``)", r" \1 "),
    (r"([ \(\[{<])(\"|\'{2})", r"\1 `` "),
    (r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", r"\1 "),
)
_PUNCTUATION = _rules(
    (r'([^\.])(\.)([\]\)}>"\'»”’ ]*)\s*$', r"\1 \2 \3 "),
    (r"([:,])([^\d])", r" \1 \2"),
    (r"([:,])$", r" \1 "),
    (r"\.{2,}", r" \g<0> "),
    (r"[;@#$%&]", r" \g<0> "),
    (r"[\u2012-\u2015]", r" \g<0> "),
    (r'([^\.])(\.)([\]\)}>"\']*)\s*$', r"\1 \2\3 "),
    (r"[?!]", r" \g<0> "),
    (r"([^'])' ", r"\1 ' "),
    (r"[*]", r" \g<0> "),
    (r"[\]\[\(\)\{\}\<\>]", r" \g<0> "),
    (r"--", r" -- "),
)
_ENDING_QUOTES = _rules(  # applied with a space around the text
    (r"([»”’])", r" \1 "),
    (r"''", " '' "),
    (r'"', " '' "),
    (r"\s+", " "),
    (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
)
_CONTRACTIONS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b")]


def treebank_tokenize(text):
    """``NLTKWordTokenizer().tokenize(text)``: the words of one sentence ('don't' -> 'do', "n't")."""
    for pattern, replacement in _STARTING_QUOTES + _PUNCTUATION:
        text = pattern.sub(replacement, text)
    text = f" {text} "
    for pattern, replacement in _ENDING_QUOTES:
        text = pattern.sub(replacement, text)
    for pattern in _CONTRACTIONS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


# Punkt's English model (nltk_data punkt_tab/english): the abbreviations; a word that ends in one of
# them and '.' does not end a sentence. ('. . ' is what is left of the token '. . .' without its
# final period.)
_ABBREVIATIONS = frozenset("""
    a.a a.c a.d a.g a.h a.m a.m.e a.s a.t adm ala ariz aug ave b.f b.v bros c c.i.t c.o.m.b c.v calif
    chg cie co col colo conn corp cos ct d d.c d.h d.w dec dr e e.f e.h e.l e.m f f.g f.j feb fla fri
    ft g g.d g.f g.k ga gen h h.c h.f h.m i.m.s ill inc j.b j.c j.j j.k j.p j.r jan jr k kan ky l l.a
    l.f l.p lt ltd m m.b.a m.d.c m.j maj messrs mg mich minn mr mrs ms n n.c n.d n.h n.j n.m n.v n.y
    nev nov oct ok okla ore p p.a.m p.m pa ph.d prof r r.a r.h r.i r.j r.k r.t rep reps s s.a s.a.y
    s.c s.g s.p.a s.s sen sep sept sr st sw t t.j tenn tues u.k u.n u.s u.s.a u.s.s.r v va vs vt w
    w.c w.r w.va w.w wash wed wis yr""".split()) | {". . "}
# The only words the model has seen start a sentence in lower case and never upper-cased: after an
# initial or a number they may start a sentence, where any other lower-case word may not.
_LOWERCASE_STARTERS = frozenset({"administrators", "b-week", "r-revised", "z-holiday"})

_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_PUNKT_WORD = re.compile(
    rf"({_MULTI_CHAR}|(?=[^\(\"\`{{\[:;&\#\*@\)}}\]\-,])\S+?"
    rf"(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))|\S)")
_POSSIBLE_END = re.compile(rf"[.?!](?=(?P<after_tok>{_NON_WORD}|\s+(?P<next_tok>\S+)))")
_REALIGN = re.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', re.MULTILINE)
_NUMBER = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")


def sent_tokenize(text):
    """``nltk.sent_tokenize(text)`` (Punkt, English model) for lower-cased ``text``."""
    spans, start = [], 0
    for match, context in _possible_ends(text):
        if _breaks_within(context):
            spans.append((start, match.end()))
            start = match.start("next_tok") if match.group("next_tok") else match.end()
    spans.append((start, len(text.rstrip())))
    return [text[a:b] for a, b in _realigned(text, spans)]


def _possible_ends(text):
    """Each '.', '?' or '!' before punctuation or a word, with the text Punkt decides it on: the word
    before it, itself and what follows (nltk's ``_match_potential_end_contexts``)."""
    found, previous, word = [], None, (0, 0)
    for match in _POSSIBLE_END.finditer(text):
        before = text[word[1]:match.start()]
        space = max((i for i, c in enumerate(before) if c in string.whitespace), default=0)
        start = space + word[1] + 1 if space else word[0]
        if previous and word[1] <= start:  # else the end is inside the next one's word ('!!!')
            found.append((previous, text[word[0]:word[1]] + previous.group() + previous["after_tok"]))
        previous, word = match, (start, match.start())
    if previous:
        found.append((previous, text[word[0]:word[1]] + previous.group() + previous["after_tok"]))
    return found


def _realigned(text, spans):
    """Closing quotes and brackets after a sentence end move back onto that sentence."""
    shift = 0
    for (start, stop), following in zip(spans, spans[1:] + [None]):
        start += shift
        match = following and _REALIGN.match(text[following[0]:following[1]])
        if match:
            yield start, following[0] + len(match.group().rstrip())
            shift = match.end()
        else:
            shift = 0
            if start < stop:
                yield start, stop


def _breaks_within(context):
    """Whether Punkt ends a sentence after a token of ``context`` that another token follows."""
    tokens = [word for line in context.split("\n") for word in _PUNKT_WORD.findall(line)]
    ends = [_ends_sentence(token) for token in tokens]
    for i in range(len(tokens) - 1):  # Punkt's second pass: decided on the next token too
        if ends[i] and _kept_together(tokens[i], tokens[i + 1], ends[i + 1]):
            ends[i] = False
    return any(ends[:-1])


def _ends_sentence(token):
    """Punkt's first pass: '.', '?', '!', and a word ending in one '.' that is no abbreviation."""
    if token in (".", "?", "!"):
        return True
    if not token.endswith(".") or token.endswith(".."):
        return False
    word = token[:-1].lower()
    return word not in _ABBREVIATIONS and word.split("-")[-1] not in _ABBREVIATIONS


def _kept_together(token, following, following_ends):
    """Punkt's second pass, for a break after ``token``: an initial or a number stays in its sentence
    when the next token cannot start one. On lower-cased text nothing else in it changes a decision:
    its orthographic evidence for a break needs an upper-case word, and each collocation of the
    English model pairs an initial or a number with a lower-case word, kept together here anyway."""
    initial = _INITIAL.match(token)
    if not (initial or _punkt_type(token, drop_period=True) == "##number##"):
        return False
    if initial and following[0].isupper():  # only letters such as 'ℝ' stay upper case after lower()
        return True  # unknown to the model, so Punkt's rule for "J. Bach" applies
    return following in (";", ":", ",", ".", "!", "?") or (
        following[0].islower()
        and _punkt_type(following, drop_period=following_ends) not in _LOWERCASE_STARTERS)


def _punkt_type(token, drop_period):
    """Punkt's type of a token: lower-cased, numbers as '##number##', maybe without a final '.'."""
    kind = _NUMBER.sub("##number##", token.lower())
    return kind[:-1] if drop_period and len(kind) > 1 and kind.endswith(".") else kind


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

"""The cmrc2018 and squad metrics: hand-worked cases of the official definitions, and the CMRC dev set."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import SHARED_DATA

from hfkit.metrics import load_metric, metric_script

CMRC_DEV = SHARED_DATA / "cmrc2018" / "cmrc2018_dev.json"


def script_module(name: str):
    """The metric's script imported as a plain module, for its helper functions."""
    spec = importlib.util.spec_from_file_location(f"hfkit_metric_{name}", metric_script(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmrc = script_module("cmrc2018")
squad = script_module("squad")


@pytest.fixture
def metric(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    return lambda name: load_metric(name, keep_in_memory=True)


def refs(**answers: list[str]) -> list[dict]:
    return [{"id": qid, "answers": {"text": texts, "answer_start": [0] * len(texts)}}
            for qid, texts in answers.items()]


def preds(**texts: str) -> list[dict]:
    return [{"id": qid, "prediction_text": text} for qid, text in texts.items()]


# ---------------------------------------------------------------------------------------------
# CMRC 2018: normalization and segmentation


def test_removes_full_width_and_listed_ascii_punctuation():
    assert cmrc.remove_punctuation("「北京」，《中国》！（首都）？“是”；『的』：") == "北京中国首都是的"
    assert cmrc.remove_punctuation("甲、乙·丙－丁～戊。") == "甲乙丙丁戊"
    # every ASCII character of the official list: - : _ * ^ / \ ~ ` + =
    assert cmrc.remove_punctuation("a-b:c_d*e^f/g\\h~i`j+k=l") == "abcdefghijkl"
    # the official list holds '……' (two characters) but tests one character at a time: '…' stays
    assert cmrc.remove_punctuation("等等……") == "等等……"


def test_keeps_ascii_sentence_punctuation_and_lowercases():
    # . , ! ? ; and quotes are not in the official list: they stay; only case and the ends change
    assert cmrc.remove_punctuation("  Hello, World! Right? Yes; 'ok'. ") == "hello, world! right? yes; 'ok'."
    assert cmrc.remove_punctuation("iPhone X") == "iphone x"  # whitespace inside is kept


def test_mixed_segmentation_splits_cjk_characters_and_words():
    assert cmrc.mixed_segmentation("iPhone手机") == ["iphone", "手", "机"]
    assert cmrc.mixed_segmentation("2018年CMRC比赛") == ["2018", "年", "cmrc", "比", "赛"]
    assert cmrc.mixed_segmentation("New York市") == ["new", "york", "市"]
    # listed punctuation is a token of its own, or dropped with rm_punc
    assert cmrc.mixed_segmentation("北京，中国") == ["北", "京", "，", "中", "国"]
    assert cmrc.mixed_segmentation("北京，中国", rm_punc=True) == ["北", "京", "中", "国"]


def test_removed_punctuation_does_not_end_a_word_run():
    """The official quirk: with rm_punc, 'ab-cd' is one run 'abcd', not two words."""
    assert cmrc.mixed_segmentation("ab-cd") == ["ab", "-", "cd"]
    assert cmrc.mixed_segmentation("ab-cd", rm_punc=True) == ["abcd"]
    assert cmrc.mixed_segmentation("光荣和ω-force", rm_punc=True) == ["光", "荣", "和", "ωforce"]


def test_word_tokenizer_matches_nltk():
    assert cmrc.word_tokenize("hello, world!") == ["hello", ",", "world", "!"]
    # decimals and thousands stay whole; only the final period is split off
    assert cmrc.word_tokenize("3.5 kg for 1,000 people.") == ["3.5", "kg", "for", "1,000", "people", "."]
    assert cmrc.word_tokenize("(a; b?)") == ["(", "a", ";", "b", "?", ")"]
    assert cmrc.word_tokenize("don't stop, it's") == ["do", "n't", "stop", ",", "it", "'s"]
    assert cmrc.word_tokenize("cannot") == ["can", "not"]  # nltk's MacIntyre contractions
    assert cmrc.word_tokenize('"iskra"') == ["``", "iskra", "''"]  # nltk rewrites double quotes
    assert cmrc.word_tokenize("  ") == []


# nltk 3.10.4 with its English punkt_tab model: nltk.word_tokenize, and the same words without the
# sentence split (nltk.word_tokenize(text, preserve_line=True), here treebank_tokenize)
PUNKT_CASES = [
    ("e.g. by", ["e.g", ".", "by"], ["e.g.", "by"]),
    ("p.e. (1984)", ["p.e", ".", "(", "1984", ")"], ["p.e.", "(", "1984", ")"]),
    ("r.s.;", ["r.s", ".", ";"], ["r.s.", ";"]),
    ("t.f. gilbert", ["t.f", ".", "gilbert"], ["t.f.", "gilbert"]),
    ("learning. machine", ["learning", ".", "machine"], ["learning.", "machine"]),
    ("in 1984. (the", ["in", "1984", ".", "(", "the"], ["in", "1984.", "(", "the"]),
    ("x. administrators", ["x", ".", "administrators"], ["x.", "administrators"]),
    # no sentence ends: abbreviations of the English model, an initial or a number before a
    # lower-case word
    ("mr. smith", ["mr.", "smith"], ["mr.", "smith"]),
    ("u.s. army", ["u.s.", "army"], ["u.s.", "army"]),
    ("j. smith", ["j.", "smith"], ["j.", "smith"]),
    ("in 1984. the", ["in", "1984.", "the"], ["in", "1984.", "the"]),
]


@pytest.mark.parametrize("text, nltk_words, unsplit_words", PUNKT_CASES)
def test_word_tokenize_splits_sentences_as_nltk_punkt(text, nltk_words, unsplit_words):
    assert cmrc.word_tokenize(text) == nltk_words
    assert cmrc.treebank_tokenize(text) == unsplit_words


def test_longest_common_substring_is_contiguous():
    assert cmrc.longest_common_substring(list("abcde"), list("xbcdy")) == 3  # 'bcd'
    assert cmrc.longest_common_substring(list("abcd"), list("cdab")) == 2  # 'ab' or 'cd'
    assert cmrc.longest_common_substring(list("abc"), list("acb")) == 1  # a subsequence of 2, no run
    assert cmrc.longest_common_substring([], list("abc")) == 0


# ---------------------------------------------------------------------------------------------
# CMRC 2018: F1 and EM


def test_cmrc_f1_of_a_longer_prediction():
    # tokens 北 京 大 学 vs 北 京 大 学 图 书 馆: LCS 4, P = 4/7, R = 4/4
    # F1 = 2 * 4/7 * 1 / (4/7 + 1) = (8/7) / (11/7) = 8/11
    assert cmrc.f1_score("北京大学图书馆", ["北京大学"]) == pytest.approx(8 / 11)
    assert cmrc.em_score("北京大学图书馆", ["北京大学"]) == 0


def test_cmrc_f1_mixed_chinese_and_english():
    # 苹 果 iphone 手 机 vs iphone 手 机: LCS 3, P = 3/5, R = 1: F1 = 2 * 0.6 / 1.6 = 0.75
    assert cmrc.f1_score("苹果iPhone手机", ["iPhone手机"]) == pytest.approx(0.75)
    # lowercasing: case does not matter to either score
    assert cmrc.f1_score("IPHONE手机", ["iphone手机"]) == 1.0
    assert cmrc.em_score("IPHONE手机", ["iphone手机"]) == 1


def test_cmrc_takes_the_best_of_several_answers():
    # vs 北京: LCS 2, P = 2/7, R = 1: F1 = (4/7) / (9/7) = 4/9; vs 北京大学: 8/11 (above); max 8/11
    assert cmrc.f1_score("北京大学图书馆", ["北京", "北京大学", "清华"]) == pytest.approx(8 / 11)
    # EM: '北京大学。' loses its '。' and equals the prediction
    assert cmrc.em_score("北京大学", ["清华大学", "北京大学。"]) == 1
    assert cmrc.f1_score("北京大学", ["清华大学", "北京大学。"]) == 1.0


def test_cmrc_lcs_f1_is_below_a_bag_of_characters_f1():
    """Right characters, wrong order: the contiguous LCS gives half, a bag of characters all."""
    # 大 学 北 京 vs 北 京 大 学: LCS 2 ('北京' or '大学'), P = R = 2/4: F1 = 0.5
    lcs_f1 = cmrc.f1_score("大学北京", ["北京大学"])
    assert lcs_f1 == pytest.approx(0.5)
    # SQuAD-style F1 on the same characters as space-separated tokens: 4 in common, P = R = 1
    bag_f1 = squad.f1_score(" ".join("大学北京"), [" ".join("北京大学")])
    assert bag_f1 == 1.0
    assert lcs_f1 < bag_f1
    # and with no spaces at all, SQuAD sees one different token each: 0
    assert squad.f1_score("大学北京", ["北京大学"]) == 0.0


def test_cmrc_em_keeps_inner_whitespace_significant():
    # remove_punctuation only strips the ends: 'new york' != 'newyork', nor 'new  york'
    assert cmrc.em_score("newyork", ["New York"]) == 0
    assert cmrc.em_score("new  york", ["New York"]) == 0
    assert cmrc.em_score("  New York ", ["new york"]) == 1
    # F1 works on tokens, so the double space is harmless there, the missing one is not:
    # [new, york] vs [new, york]: 1; [newyork] vs [new, york]: no common token, 0
    assert cmrc.f1_score("new  york", ["New York"]) == 1.0
    assert cmrc.f1_score("newyork", ["New York"]) == 0.0


def test_cmrc_punctuation_inside_an_english_answer():
    # '-' is removed inside the run (ωforce), a space is not (ω, force): no common token
    assert cmrc.f1_score("ω force", ["ω-force"]) == 0.0
    assert cmrc.em_score("ω—force", ["ω-force"]) == 0  # the em dash '—' is not in the list
    assert cmrc.em_score("ωforce", ["ω-force"]) == 1  # 'ωforce' == 'ωforce'


def test_cmrc_empty_or_punctuation_only_prediction_scores_zero():
    assert cmrc.f1_score("", ["北京"]) == 0.0
    assert cmrc.em_score("", ["北京"]) == 0
    assert cmrc.f1_score("，。", ["北京"]) == 0.0  # nothing left after removing punctuation
    assert cmrc.em_score("，。", ["北京"]) == 0


def test_cmrc_answers_must_not_be_empty():
    with pytest.raises(ValueError, match="at least one reference answer"):
        cmrc.f1_score("北京", [])


def test_cmrc_through_evaluate(metric):
    module = metric("cmrc2018")
    result = module.compute(
        predictions=preds(q2="大学北京", extra="上海", q1="北京大学"),
        references=refs(q1=["北京大学。", "北大"], q2=["北京大学"], q3=["上海"]),
    )
    # matched by id, not position. q1: EM 1, F1 1; q2: EM 0, F1 0.5 (above);
    # q3 has no prediction ('extra' is no reference's id, so it is ignored): 0 and 0
    # EM = 100 * 1/3, F1 = 100 * 1.5/3 = 50
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(50.0)
    assert set(result) == {"exact_match", "f1"}


def test_cmrc_accumulates_batches(metric):
    module = metric("cmrc2018")
    module.add_batch(predictions=preds(a="北京"), references=refs(a=["北京"]))
    module.add_batch(predictions=preds(b="上海"), references=refs(b=["北京"]))
    assert module.compute() == {"exact_match": 50.0, "f1": 50.0}


# (prediction, answers, the official EM and F1 of the pair), scored by the official
# cmrc2018_evaluate.py run with nltk 3.10.4 and its English punkt_tab model
OFFICIAL_CASES = [
    ("北京…", ["北京"], 0, 0.8),  # '…' stays: 北 京 … vs 北 京, P = 2/3, R = 1
    ("等等……", ["等等"], 0, 0.8),  # 等 等 …… vs 等 等
    ("他说……", ["他说……"], 1, 1.0),
    ("e.g. by egi", ["e.g."], 0, 2 / 3),  # [e.g . by egi] vs [e.g .]: P = 2/4, R = 1
    ("p.e. (1984)", ["p.e."], 0, 4 / 7),  # [p.e . ( 1984 )] vs [p.e .]: P = 2/5, R = 1
    ("t.f. gilbert", ["t.f"], 0, 0.5),  # [t.f . gilbert] vs [t.f]: P = 1/3, R = 1
    ("mr. smith", ["mr."], 0, 0.0),  # 'mr' is an abbreviation: [mr. smith] vs [mr .]
    ("1984. the", ["1984"], 0, 0.0),  # a number before a lower-case word: [1984. the] vs [1984]
]


@pytest.mark.parametrize("prediction, answers, em, f1", OFFICIAL_CASES)
def test_cmrc_official_scores_of_ellipses_and_sentence_ends(prediction, answers, em, f1):
    assert cmrc.em_score(prediction, answers) == em
    assert cmrc.f1_score(prediction, answers) == pytest.approx(f1)


def test_cmrc_official_totals_of_ellipses_and_sentence_ends(metric):
    ids = [f"q{i}" for i in range(len(OFFICIAL_CASES))]
    result = metric("cmrc2018").compute(
        predictions=[{"id": i, "prediction_text": c[0]} for i, c in zip(ids, OFFICIAL_CASES)],
        references=[{"id": i, "answers": {"text": c[1], "answer_start": [0] * len(c[1])}}
                    for i, c in zip(ids, OFFICIAL_CASES)])
    # the official script prints EM 12.5, F1 54.22619047619048 (hfkit used to say 37.5 and 37.5)
    assert result["exact_match"] == 12.5
    assert result["f1"] == pytest.approx(54.22619047619048, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1


def test_squad_normalization():
    assert squad.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert squad.normalize_answer("An apple, a day.") == "apple day"
    # articles only as whole words: 'theater' and 'Anna' keep their letters
    assert squad.normalize_answer("the theater of Anna") == "theater of anna"
    # all of string.punctuation goes, even inside words: "don't" -> 'dont', 'U.S.' -> 'us'
    assert squad.normalize_answer("Don't, U.S.-based (x)") == "dont usbased x"


def test_squad_em_and_bag_of_tokens_f1():
    assert squad.em_score("the Eiffel Tower.", ["Eiffel Tower"]) == 1
    # same tokens in another order: EM 0, F1 1 (bags of tokens)
    assert squad.em_score("tower eiffel", ["Eiffel Tower"]) == 0
    assert squad.f1_score("tower eiffel", ["Eiffel Tower"]) == 1.0
    # [big, eiffel, tower] vs [eiffel, tower]: 2 common, P = 2/3, R = 1: F1 = (4/3) / (5/3) = 0.8
    assert squad.f1_score("the big Eiffel Tower", ["Eiffel Tower"]) == pytest.approx(0.8)
    # repeated tokens count once per occurrence: [paris, paris] vs [paris]: 1 common, P = 1/2, R = 1
    assert squad.f1_score("Paris Paris", ["Paris"]) == pytest.approx(2 / 3)
    # best of several answers: 0 vs 'London', 0.8 vs 'Eiffel Tower'
    assert squad.f1_score("the big Eiffel Tower", ["London", "Eiffel Tower"]) == pytest.approx(0.8)
    assert squad.f1_score("", ["Paris"]) == 0.0
    assert squad.f1_score("a the", ["Paris"]) == 0.0  # only articles: no token left


def test_squad_through_evaluate(metric):
    module = metric("squad")
    result = module.compute(
        predictions=preds(q2="the big Eiffel Tower", q1="The Eiffel Tower", q4="Paris"),
        references=refs(q1=["Eiffel Tower"], q2=["Eiffel Tower", "the tower"], q3=["Paris"]),
    )
    # q1: EM 1, F1 1; q2: EM 0, F1 max(0.8, [big eiffel tower] vs [tower]: 1/3, 1 -> 0.5) = 0.8;
    # q3 unanswered (q4 is no reference's id, ignored): 0. EM = 100/3, F1 = 100 * 1.8/3 = 60
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(60.0)


# ---------------------------------------------------------------------------------------------
# The real CMRC 2018 dev set


def cmrc_dev_references() -> list[dict]:
    if not CMRC_DEV.is_file():
        pytest.skip(f"{CMRC_DEV} is not there")
    data = json.loads(CMRC_DEV.read_text(encoding="utf-8"))["data"]
    return [{"id": qa["id"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def test_cmrc_dev_first_answers_score_100_and_empty_ones_0(metric):
    references = cmrc_dev_references()
    assert len(references) == 3219
    module = metric("cmrc2018")
    first = [{"id": r["id"], "prediction_text": r["answers"]["text"][0]} for r in references]
    assert module.compute(predictions=first, references=references) == {"exact_match": 100.0, "f1": 100.0}
    empty = [{"id": r["id"], "prediction_text": ""} for r in references]
    assert module.compute(predictions=empty, references=references) == {"exact_match": 0.0, "f1": 0.0}


def test_cmrc_dev_missing_predictions_count_as_zero(metric):
    references = cmrc_dev_references()
    # evaluate wants as many predictions as references: answer every other question (in reverse
    # order, since matching goes by id), and fill up with ids that are no question's
    answered = [{"id": r["id"], "prediction_text": r["answers"]["text"][0]} for r in references[::2]]
    filler = [{"id": f"no-such-question-{i}", "prediction_text": ""}
              for i in range(len(references) - len(answered))]
    result = metric("cmrc2018").compute(predictions=answered[::-1] + filler, references=references)
    assert len(answered) == 1610
    expected = 100.0 * 1610 / 3219  # the 1,609 others score 0
    assert result["exact_match"] == pytest.approx(expected)
    assert result["f1"] == pytest.approx(expected)



def test_cmrc_dev_runs_that_sentence_splitting_changes(monkeypatch):
    """nltk (3.10.4, English punkt_tab) ends a sentence inside 7 of the runs of the dev contexts."""
    if not CMRC_DEV.is_file():
        pytest.skip(f"{CMRC_DEV} is not there")
    runs, tokenize = set(), cmrc.word_tokenize
    monkeypatch.setattr(cmrc, "word_tokenize", lambda run: runs.add(run) or tokenize(run))
    for article in json.loads(CMRC_DEV.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for rm_punc in (False, True):
                cmrc.mixed_segmentation(paragraph["context"], rm_punc=rm_punc)
    changed = {r for r in runs if tokenize(r) != cmrc.treebank_tokenize(r)}
    assert len(runs) == 4133 and len(changed) == 7
    # the words that lose their final period to a sentence end, in those 7 runs
    split = {w for r in changed for w in set(cmrc.treebank_tokenize(r)) - set(tokenize(r))}
    assert split == {"e.g.", "p.e.", "t.m.", "d.f.", "r.s.", "t.f.", "learning.", "generalizations."}
    run = "17, 1995.mitchell, t.m. (1980). the need for biases in learning generalizations. cbm"
    assert tokenize(run) == [
        "17", ",", "1995.mitchell", ",", "t.m", ".", "(", "1980", ")", ".", "the", "need", "for", "biases",
        "in", "learning", "generalizations", ".", "cbm"]

"""Extractive QA: data, windows, span decoding, `hfkit qa`, training and `hfkit evaluate`, offline."""
# ruff: noqa: F811  (pytest hands the imported fake_hub fixture to tests by that argument name)

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER_ZH, SHARED_DATA, toy_chinese_qa, write_chinese_qa_model, write_toy_cmrc
from fakehub import fake_hub  # noqa: F401  (a fixture)

from hfkit.cli import main
from hfkit.data.qa import QACollator, encode_windows, load_qa_data, read_squad_json, train_features
from hfkit.inference import QuestionAnswerer, answer
from hfkit.qa import collect_answers, top_spans

QUESTION = "谁是人工智能之父？"
CONTEXT = "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。"
CMRC_DEV = SHARED_DATA / "cmrc2018" / "cmrc2018_dev.json"


class PointAt(torch.nn.Module):
    """Stands in for a trained model: start logits peak on one token id, end logits on another."""

    def __init__(self, start_id: int, end_id: int, null: float = -10.0) -> None:
        super().__init__()
        self.start_id, self.end_id, self.null = start_id, end_id, null
        self.widths: list[int] = []

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from transformers.modeling_outputs import QuestionAnsweringModelOutput

        self.widths.append(input_ids.shape[1])
        start = (input_ids == self.start_id).float() * 10
        end = (input_ids == self.end_id).float() * 10
        start[:, 0] = end[:, 0] = self.null  # the CLS token: "no answer"
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


class Logits(torch.nn.Module):
    """Stands in for a model: fixed (start, end) logits for some token ids, 0 elsewhere."""

    def __init__(self, by_id: dict[int, tuple[float, float]]) -> None:
        super().__init__()
        self.by_id = by_id

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from transformers.modeling_outputs import QuestionAnsweringModelOutput

        start, end = torch.zeros(input_ids.shape), torch.zeros(input_ids.shape)
        for token, (s, e) in self.by_id.items():
            start[input_ids == token], end[input_ids == token] = s, e
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


def _pointing(folder: Path, start: str, end: str, **kwargs) -> QuestionAnswerer:
    qa = QuestionAnswerer(str(folder), device="cpu", **kwargs)
    ids = qa.tokenizer.convert_tokens_to_ids([start, end])
    qa.model = PointAt(*ids)
    return qa


def _filler(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list(FILLER_ZH), size=n))


# -- hfkit qa from the two folder layouts ------------------------------------------------------

@pytest.mark.parametrize("layout", ["chinese_qa_bin", "chinese_qa_safetensors"])
def test_hfkit_qa_answers_with_a_valid_span_from_both_layouts(layout, request, capsys):
    folder = request.getfixturevalue(layout)
    weights = {p.name for p in folder.iterdir()}
    assert ("pytorch_model.bin" in weights) == (layout == "chinese_qa_bin")
    assert "tokenizer.json" not in weights  # vocab.txt is the whole tokenizer
    assert main(["qa", "--model", str(folder), "--question", QUESTION, "--context", CONTEXT]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"answer", "score", "start", "end"}
    assert 0 <= result["start"] < result["end"] <= len(CONTEXT)
    assert CONTEXT[result["start"]:result["end"]] == result["answer"]
    assert 0.0 < result["score"] <= 1.0


def test_bin_and_safetensors_folders_give_the_same_answers(tmp_path):
    a = write_chinese_qa_model(tmp_path / "bin", "bin", seed=3)
    b = write_chinese_qa_model(tmp_path / "st", "safetensors", seed=3)
    got_a = answer(QUESTION, CONTEXT, model=str(a), top_k=3)
    got_b = answer(QUESTION, CONTEXT, model=str(b), top_k=3)
    assert [r["answer"] for r in got_a] == [r["answer"] for r in got_b]
    assert np.allclose([r["score"] for r in got_a], [r["score"] for r in got_b])


def test_answer_shapes_follow_the_pipeline(chinese_qa_bin):
    model = str(chinese_qa_bin)
    one = answer(QUESTION, CONTEXT, model=model)
    assert isinstance(one, dict)
    ranked = answer(QUESTION, CONTEXT, model=model, top_k=4)
    assert len(ranked) == 4 and ranked[0] == one
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert len({(r["start"], r["end"]) for r in ranked}) == 4  # distinct spans
    many = answer([QUESTION, "什么是计算机科学的奠基人？"], CONTEXT, model=model, top_k=2)
    assert len(many) == 2 and all(len(r) == 2 for r in many)
    # batching does not change a question's answers (its padding may move a logit by a rounding error)
    assert [(r["answer"], r["start"], r["end"]) for r in many[0]] == [
        (r["answer"], r["start"], r["end"]) for r in ranked[:2]]
    assert [r["score"] for r in many[0]] == pytest.approx([r["score"] for r in ranked[:2]], rel=1e-6)


def test_max_answer_length_bounds_the_span(chinese_qa_bin):
    for r in answer(QUESTION, CONTEXT, model=str(chinese_qa_bin), top_k=10, max_answer_length=2):
        assert 1 <= len(r["answer"]) <= 2


# -- windows and decoding ----------------------------------------------------------------------

def test_answer_in_a_later_window_is_found(chinese_qa_bin):
    context = _filler(300, 0) + "艾伦·图灵" + _filler(100, 1)
    qa = _pointing(chinese_qa_bin, "艾", "灵", max_length=64, doc_stride=16)
    enc = encode_windows(qa.tokenizer, [QUESTION], [context], 64, 16)
    assert len(enc["input_ids"]) > 5  # the context really is split into windows
    result = answer(QUESTION, context, model=qa, top_k=3)
    assert result[0]["answer"] == "艾伦·图灵"
    assert (result[0]["start"], result[0]["end"]) == (300, 305)
    # overlapping windows see the span twice; it is listed once
    assert sum(r["answer"] == "艾伦·图灵" for r in result) == 1


def test_inputs_are_padded_per_batch_not_to_the_maximum(chinese_qa_bin):
    qa = _pointing(chinese_qa_bin, "艾", "灵", max_length=128)
    answer(QUESTION, CONTEXT, model=qa)
    answer([QUESTION, "谁？"], [CONTEXT, CONTEXT + _filler(40, 2)], model=qa)
    longest = len(qa.tokenizer(QUESTION, CONTEXT)["input_ids"])
    assert qa.model.widths[0] == longest < 128
    assert qa.model.widths[1] < 128


def test_handle_impossible_returns_an_empty_answer_when_no_answer_wins(chinese_qa_bin):
    qa = _pointing(chinese_qa_bin, "[UNK]", "[UNK]")  # nothing in the context is pointed at
    qa.model.null = 10.0
    assert answer(QUESTION, CONTEXT, model=qa, handle_impossible=True)["answer"] == ""
    assert answer(QUESTION, CONTEXT, model=qa)["answer"] != ""  # without it, the best span


def test_top_spans_keeps_only_valid_spans():
    start = torch.tensor([[5.0, 0.0, 9.0, 1.0, 0.0, 3.0]])
    end = torch.tensor([[5.0, 9.0, 0.0, 0.0, 8.0, 2.0]])
    context = torch.tensor([[0, 0, 1, 1, 1, 1]])
    spans = top_spans(start, end, context, max_answer_length=3, k=36)
    valid = spans["score"][0] > -torch.inf
    pairs = list(zip(spans["start"][0][valid].tolist(), spans["end"][0][valid].tolist()))
    # inside the context (2..5), end >= start, at most 3 tokens
    assert set(pairs) == {(s, e) for s in range(2, 6) for e in range(s, min(s + 3, 6))}
    assert pairs[0] == (2, 4)  # the best start (9) with the best end that is allowed (8)
    assert spans["score"][0][0] == 17.0 and spans["null"][0] == 10.0  # raw logit sums; CLS: 5 + 5


def test_collect_answers_maps_tokens_to_characters_across_windows():
    spans = {"start": np.array([[1, 1], [2, 1]]), "end": np.array([[2, 1], [2, 1]]),
             "score": np.array([[0.5, 0.2], [0.6, 0.1]]), "null": np.array([0.0, 0.0])}
    offsets = [[(0, 0), (0, 2), (2, 4)], [(0, 0), (2, 4), (4, 6)]]
    got = collect_answers(spans, [0, 0], offsets, ["abcdef"], top_k=4)[0]
    assert [r["answer"] for r in got] == ["ef", "abcd", "ab", "cd"]  # by logit sum, across windows
    probs = np.exp([0.6, 0.5, 0.2, 0.1]) / np.exp([0.6, 0.5, 0.2, 0.1]).sum()
    assert got[0] == {"answer": "ef", "score": pytest.approx(probs[0]), "start": 4, "end": 6}
    assert [r["score"] for r in got] == pytest.approx(probs)
    # the "no answer" logits of the windows (the lowest counts, as in utils_qa) win when best
    spans["null"] = np.array([0.7, 0.9])
    assert collect_answers(spans, [0, 0], offsets, ["abcdef"], handle_impossible=True)[0][0]["answer"] == ""
    spans["null"] = np.array([0.7, 0.55])
    assert collect_answers(spans, [0, 0], offsets, ["abcdef"], handle_impossible=True)[0][0]["answer"] == "ef"


def utils_qa_best(start_logits, end_logits, windows, contexts, n_best=20, max_answer_length=30):
    """transformers' utils_qa.postprocess_qa_predictions (SQuAD v1, no null answer), re-implemented:
    per window the n_best starts and the n_best ends by raw logit, every valid pair of them scored
    start + end logit, the best over all windows of a context (the first of equal scores)."""
    best: dict[int, tuple[float, tuple[int, int]]] = {}
    for w, ex in enumerate(windows["example_index"]):
        offsets, context = windows["offset_mapping"][w], windows["context_mask"][w]
        for s in np.argsort(start_logits[w])[-1:-n_best - 1:-1]:
            for e in np.argsort(end_logits[w])[-1:-n_best - 1:-1]:
                if s >= len(context) or e >= len(context) or not (context[s] and context[e]):
                    continue  # outside the context (utils_qa: offsets set to None)
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = start_logits[w][s] + end_logits[w][e]
                if ex not in best or score > best[ex][0]:
                    best[ex] = (score, (offsets[s][0], offsets[e][1]))
    return [best[ex][1] for ex in range(len(contexts))]


def long_dev_windows(tokenizer, n=50, min_chars=500):
    """The first ``n`` dev contexts of at least ``min_chars`` characters, with their first question,
    in 128-token windows with a stride of 32, and per window the gold answer's first and last token
    when the window holds all of it."""
    rows = [(p["qas"][0]["question"], p["context"], p["qas"][0]["answers"][0])
            for article in json.loads(CMRC_DEV.read_text(encoding="utf-8"))["data"]
            for p in article["paragraphs"] if len(p["context"]) >= min_chars][:n]
    windows = encode_windows(tokenizer, [r[0] for r in rows], [r[1] for r in rows], 128, 32)
    gold = []
    for w, (offsets, context) in enumerate(zip(windows["offset_mapping"], windows["context_mask"])):
        answer_ = rows[windows["example_index"][w]][2]
        first, last = answer_["answer_start"], answer_["answer_start"] + len(answer_["text"])
        inside = [i for i, (a, b) in enumerate(offsets) if context[i] and a < last and b > first]
        covered = [offsets[i] for i, m in enumerate(context) if m]
        gold.append((inside[0], inside[-1]) if inside and covered[0][0] <= first and covered[-1][1] >= last
                    else None)
    return [r[1] for r in rows], windows, gold


@pytest.mark.skipif(not CMRC_DEV.is_file(), reason="../shared/data/cmrc2018 is not here")
def test_spans_rank_by_logit_sums_across_windows_as_utils_qa(chinese_qa_bin):
    """Untrained logits (noise, sd 0.1) on 50 long dev contexts in 128-token windows, stride 32:
    hfkit's best answer is utils_qa's for all 50 (a softmax per window agreed on 6 and took the short
    last window in the 44 others). With +1 on the gold start and end logits both find the gold
    50/50 (a softmax per window: 39). Lower ranks may differ: utils_qa pairs only the 20 best starts
    with the 20 best ends of a window, hfkit scores every valid span."""
    from transformers import AutoTokenizer

    contexts, windows, gold = long_dev_windows(AutoTokenizer.from_pretrained(chinese_qa_bin))
    n = len(windows["input_ids"])
    assert len(contexts) == 50 and n == 417
    rng = np.random.default_rng(0)
    untrained = rng.normal(0, 0.1, (n, 128)), rng.normal(0, 0.1, (n, 128))  # padded to 128, as run_qa
    signal = [logits.copy() for logits in untrained]
    for w, g in enumerate(gold):
        if g is not None:
            signal[0][w, g[0]] += 1
            signal[1][w, g[1]] += 1
    context_mask = torch.zeros(n, 128, dtype=torch.bool)
    for w, mask in enumerate(windows["context_mask"]):
        context_mask[w, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    gold_chars = {windows["example_index"][w]: (windows["offset_mapping"][w][g[0]][0],
                                                 windows["offset_mapping"][w][g[1]][1])
                  for w, g in enumerate(gold) if g is not None}
    for start, end in (untrained, signal):
        spans = top_spans(torch.tensor(start), torch.tensor(end), context_mask, max_answer_length=30)
        found = collect_answers({k: v.numpy() for k, v in spans.items()}, windows["example_index"],
                                windows["offset_mapping"], contexts)
        assert [(r[0]["start"], r[0]["end"]) for r in found] == utils_qa_best(start, end, windows, contexts)
    assert [(r[0]["start"], r[0]["end"]) for r in found] == [gold_chars[ex] for ex in range(50)]


def test_answer_ranks_a_long_window_above_a_short_last_one(chinese_qa_bin):
    """Through ``answer``: 艾伦·图灵 in a full window (logits 3 on 艾 and 灵) beats 李白 alone in the short
    last window (logits 2.5): a per-window softmax spread over the full window's context would pick 李白."""
    context = "艾伦·图灵" + _filler(156, 5) + "李白"
    qa = QuestionAnswerer(str(chinese_qa_bin), device="cpu", max_length=64, doc_stride=16)
    ids = qa.tokenizer.convert_tokens_to_ids(["艾", "灵", "李", "白"])
    qa.model = Logits({ids[0]: (3.0, 0.0), ids[1]: (0.0, 3.0), ids[2]: (2.5, 0.0), ids[3]: (0.0, 2.5)})
    windows = encode_windows(qa.tokenizer, [QUESTION], [context], 64, 16)
    assert sum(windows["context_mask"][-1]) < 20  # the last window is short
    got = answer(QUESTION, context, model=qa, top_k=2)
    assert [r["answer"] for r in got] == ["艾伦·图灵", "李白"]
    assert got[0]["score"] / got[1]["score"] == pytest.approx(np.exp(6.0 - 5.0), rel=1e-5)


# -- data ----------------------------------------------------------------------------------------

def test_train_features_point_at_the_answer_or_at_cls(tmp_path):
    from transformers import AutoTokenizer

    folder = write_chinese_qa_model(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(folder)
    path = tmp_path / "toy_train.json"
    path.write_text(json.dumps(toy_chinese_qa(30, seed=4, filler=(20, 60)), ensure_ascii=False))
    ds = read_squad_json(path)
    features = train_features(ds, tok, max_length=48, doc_stride=12)
    assert len(features) > len(ds)  # long contexts give several windows
    inside = outside = 0
    for f in features:
        s, e = f["start_positions"], f["end_positions"]
        if s == 0:
            outside += 1
            assert e == 0
        else:
            inside += 1
            text = "".join(tok.convert_ids_to_tokens(f["input_ids"][s:e + 1]))
            assert text in set(ds["answers"][i]["text"][0] for i in range(len(ds)))
    assert inside >= len(ds) and outside > 0


def test_a_wrong_answer_start_is_repaired(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_chinese_qa_model(tmp_path / "m"))
    data = toy_chinese_qa(1, seed=0)
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3  # off by three, as some releases are
    path = tmp_path / "x_train.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    f = train_features(read_squad_json(path), tok, 128, 32)[0]
    got = "".join(tok.convert_ids_to_tokens(f["input_ids"][f["start_positions"]:f["end_positions"] + 1]))
    assert got == qa["answers"][0]["text"]


def test_split_names_come_from_the_file_names(chinese_qa_files):
    splits = load_qa_data(str(chinese_qa_files))
    assert set(splits) == {"train", "validation"}
    assert splits["train"].column_names == ["id", "question", "context", "answers"]
    assert len(splits["train"]) == 400


def test_collator_pads_context_mask_with_zeros(chinese_qa_bin):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chinese_qa_bin)
    enc = encode_windows(tok, ["谁？", QUESTION], [CONTEXT, CONTEXT + CONTEXT], 128, 32)
    rows = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids", "context_mask")}
            for i in range(2)]
    batch = QACollator(tok)(rows)
    assert batch["input_ids"].shape == batch["context_mask"].shape
    assert batch["context_mask"][0].sum() == len(CONTEXT)  # one token per character
    assert not batch["context_mask"][0, len(rows[0]["input_ids"]):].any()


@pytest.mark.skipif(not CMRC_DEV.is_file(), reason="../shared/data/cmrc2018 is not here")
def test_real_cmrc_dev_reads_as_squad_rows():
    ds = read_squad_json(CMRC_DEV)
    assert len(ds) == 3219
    row = ds[0]
    for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
        assert row["context"][start:start + len(text)] == text
    assert load_qa_data(str(CMRC_DEV.parent)).keys() == {"validation", "trial"}


# -- bad input: a message, not a traceback --------------------------------------------------------

@pytest.mark.parametrize("question, context, message", [
    ("", CONTEXT, "question is empty"),
    ("   ", CONTEXT, "question is empty"),
    (QUESTION, "", "context is empty"),
    ("谁" * 200, CONTEXT, "question is too long"),
    ("who is the father of computing", "Alan Turing is called the father of computer science",
     "unknown to this model's vocabulary"),
])
def test_bad_input_gets_a_clear_message(chinese_qa_bin, capsys, question, context, message):
    code = main(["qa", "--model", str(chinese_qa_bin), "--question", question, "--context", context])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_context_far_longer_than_the_model_is_read_in_windows(chinese_qa_bin):
    context = _filler(5000, 3) + "艾伦·图灵" + _filler(50, 4)
    qa = _pointing(chinese_qa_bin, "艾", "灵")
    assert answer(QUESTION, context, model=qa)["start"] == 5000


@pytest.mark.parametrize("remove, message", [
    (("vocab.txt",), "has no tokenizer"),
    (("pytorch_model.bin",), "has no weights"),
    (("config.json",), "has no config.json"),
])
def test_incomplete_model_folders_are_named(chinese_qa_bin, tmp_path, capsys, remove, message):
    folder = tmp_path / "copy"
    shutil.copytree(chinese_qa_bin, folder)
    for name in remove:
        (folder / name).unlink()
    assert main(["qa", "--model", str(folder), "--question", QUESTION, "--context", CONTEXT]) == 2
    assert message in capsys.readouterr().err


def test_a_classifier_is_not_taken_for_a_qa_model(tiny_bert_dir, capsys):
    assert main(["qa", "--model", str(tiny_bert_dir), "--question", "q", "--context", "c"]) == 2
    assert "not an extractive question-answering model" in capsys.readouterr().err


def test_an_uncached_hub_id_offline_says_how_to_download(capsys):
    code = main(["qa", "--model", "uer/roberta-base-chinese-extractive-qa", "--question", QUESTION,
                 "--context", CONTEXT])
    assert code == 2
    err = capsys.readouterr().err
    assert "hfkit download uer/roberta-base-chinese-extractive-qa" in err


# -- training and evaluation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cmrc_run(tmp_path_factory):
    """The cmrc2018 recipe on the synthetic set with the tiny model: seconds on a CPU."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("cmrc")
    data = write_toy_cmrc(root / "data")
    model = write_chinese_qa_model(root / "untrained", "bin")
    recipe = load_recipe("cmrc2018", [
        f"data.path={data}", f"model.name={model}", "train.epochs=4", "train.lr=1e-3",
        "data.max_length=64", "data.doc_stride=16", "train.mixed_precision=no",
        "train.warmup_ratio=0"], output_dir=str(root / "run"))
    results = finetune(recipe)
    return root, results


def test_training_lifts_em_and_f1_well_above_the_untrained_model(cmrc_run, capsys):
    root, results = cmrc_run
    dev = str(root / "data" / "toy_dev.json")
    assert main(["evaluate", "--model", str(root / "untrained"), "--data", dev, "--max-length", "64",
                 "--doc-stride", "16", "--max-answer-length", "64",
                 "--output-dir", str(root / "eval-untrained")]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["scorer"] == "cmrc2018" and before["questions"] == 60
    assert results["qa_scorer"] == "cmrc2018"
    assert results["eval_f1"] > before["f1"] + 30, (before, results)
    assert results["eval_exact_match"] > before["exact_match"] + 15, (before, results)


def test_result_folder_has_predictions_and_answers_like_training_scored(cmrc_run, capsys):
    root, results = cmrc_run
    run = root / "run"
    predictions = json.loads((run / "predictions.json").read_text())
    nbest = json.loads((run / "nbest_predictions.json").read_text())
    assert len(predictions) == 60 and predictions.keys() == nbest.keys()
    assert all(nbest[i][0]["answer"] == predictions[i] for i in predictions)
    assert (run / "training_curves.png").is_file() and (run / "model.safetensors").is_file()
    # hfkit evaluate on the saved folder decodes exactly as evaluation during training did: the
    # window and answer settings come from the folder's recipe.yaml
    dev = str(root / "data" / "toy_dev.json")
    assert main(["evaluate", "--model", str(run), "--data", dev]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["f1"] == pytest.approx(results["eval_f1"])
    assert after["exact_match"] == pytest.approx(results["eval_exact_match"])
    assert json.loads((run / "eval-toy_dev" / "predictions.json").read_text()) == predictions
    # the run's own data folder: its eval split (toy_dev.json), as training scored it
    assert main(["evaluate", "--model", str(run), "--data", str(root / "data")]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["split"] == "validation" and own["questions"] == 60 and own["f1"] == after["f1"]


def test_a_qa_run_on_one_file_is_scored_on_the_questions_it_held_out(tmp_path, capsys):
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_toy_cmrc(tmp_path / "data", train=150, dev=0) / "toy_train.json"
    model = write_chinese_qa_model(tmp_path / "untrained", "bin")
    results = finetune(load_recipe("cmrc2018", [
        f"data.path={data}", f"model.name={model}", "train.epochs=2", "train.lr=1e-3", "data.max_length=64",
        "data.doc_stride=16", "train.mixed_precision=no", "train.warmup_ratio=0", "data.val_fraction=0.2",
        "train.seed=5"], output_dir=str(tmp_path / "run")))
    capsys.readouterr()  # training's lines
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(data)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["split"] == "train (the part training held out)" and scored["questions"] == 30
    assert scored["f1"] == pytest.approx(results["eval_f1"])
    assert scored["exact_match"] == pytest.approx(results["eval_exact_match"])


@pytest.mark.slow
def test_cmrc2018_recipe_through_accelerate_launch(tmp_path, chinese_qa_files, chinese_qa_bin):
    import os
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "run"
    sets = [f"data.path={chinese_qa_files}", f"model.name={chinese_qa_bin}", "train.epochs=1",
            "data.max_length=64", "data.doc_stride=16", "train.mixed_precision=no"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "scripts/finetune.py", "--recipe", "cmrc2018",
           "--output-dir", str(out), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_exact_match", "eval_f1"} <= results.keys() and results["qa_scorer"] == "cmrc2018"
    assert len(json.loads((out / "predictions.json").read_text())) == 60
    # the saved folder answers through the console command, offline
    proc = subprocess.run([sys.executable, "-m", "hfkit.cli", "qa", "--model", str(out), "--question",
                           QUESTION, "--context", CONTEXT], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert CONTEXT[got["start"]:got["end"]] == got["answer"]


# -- from the Hub: a local fake Hub speaks the API, the real client code runs --------------------

def test_hub_id_answers_and_download_makes_an_offline_folder(fake_hub, chinese_qa_bin, tmp_path, capsys,
                                                             monkeypatch):
    from fakehub import set_offline

    files = {p.name: p.read_bytes() for p in chinese_qa_bin.iterdir()}
    fake_hub.add_repo("uer/roberta-base-chinese-extractive-qa", {**files, "tf_model.h5": b"junk"})
    from_hub = answer(QUESTION, CONTEXT, model="uer/roberta-base-chinese-extractive-qa", top_k=2)

    folder = tmp_path / "models" / "roberta-chinese-qa"
    assert main(["download", "uer/roberta-base-chinese-extractive-qa", "--to", str(folder)]) == 0
    assert str(folder) in capsys.readouterr().out
    assert {p.name for p in folder.iterdir() if p.is_file()} == set(files)  # no tf_model.h5
    set_offline(monkeypatch, True)
    assert main(["qa", "--model", str(folder), "--question", QUESTION, "--context", CONTEXT,
                 "--top-k", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == from_hub

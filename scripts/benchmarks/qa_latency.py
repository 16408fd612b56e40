"""Extractive QA latency and throughput: hfkit's ``answer`` against padding every input to 384 tokens.

    python scripts/benchmarks/qa_latency.py --data ../shared/data/cmrc2018/cmrc2018_dev.json

The model is BERT-base sized (12 layers, hidden 768, the 21,128-token vocabulary of Chinese
BERT/RoBERTa) with random weights, saved in the layout of ``uer/roberta-base-chinese-extractive-qa``
(``--model FOLDER`` times a real one instead). Two workloads:
(1) the README example question, one call at a time: ms per question (median);
(2) the first 100 CMRC 2018 dev questions: ms per question and questions/s.
Naive: one question at a time, its windows (max 384 tokens, stride 128) padded to 384 tokens,
fp32, decoded as transformers' ``run_qa.py`` (utils_qa) ranks answers: the best valid span by
its raw start + end logit sum, across all windows.
hfkit: ``answer`` (windows padded to the longest in the batch, exact span search), in fp32
(answers must equal the naive ones) and bf16 (EM/F1 against the fp32 answers reported).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUESTION = "谁是人工智能之父？"
CONTEXT = "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB_SIZE = 21128  # bert-base-chinese / chinese-roberta-wwm-ext


def random_bert_base(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised BertForQuestionAnswering of bert-base size, vocab.txt tokenizer."""
    from transformers import BertConfig, BertForQuestionAnswering

    chars = sorted({ch for t in texts for ch in t if not ch.isspace()})
    vocab = SPECIALS + chars
    vocab += [f"[unused{i}]" for i in range(VOCAB_SIZE - len(vocab))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab[:VOCAB_SIZE]) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB_SIZE, architectures=["BertForQuestionAnswering"])
    config.save_pretrained(folder)
    torch.save(BertForQuestionAnswering(config).state_dict(), folder / "pytorch_model.bin")
    return folder


class Naive:
    """Per question: windows padded to 384, fp32, exhaustive span search in NumPy."""

    def __init__(self, folder: str, max_length: int = 384, stride: int = 128) -> None:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
        self.max_length, self.stride = max_length, stride

    @torch.inference_mode()
    def __call__(self, question: str, context_text: str, max_answer_length: int = 30) -> str:
        enc = self.tokenizer(question, context_text, truncation="only_second", max_length=self.max_length,
                             stride=self.stride, return_overflowing_tokens=True,
                             return_offsets_mapping=True, padding="max_length", return_tensors="pt")
        offsets = enc.pop("offset_mapping").tolist()
        enc.pop("overflow_to_sample_mapping")
        out = self.model(**enc)
        best, best_score = "", -np.inf
        for w in range(len(offsets)):
            # utils_qa's rule: raw start + end logits of a valid span, compared across windows
            context = np.array([s == 1 for s in enc.sequence_ids(w)])
            idx = np.flatnonzero(context)
            start, end = out.start_logits[w].numpy()[idx], out.end_logits[w].numpy()[idx]
            scores = start[:, None] + end[None, :]
            valid = np.triu(np.ones_like(scores, dtype=bool)) & ~np.triu(np.ones_like(scores, dtype=bool),
                                                                          max_answer_length)
            scores = np.where(valid, scores, -np.inf)  # end >= start, at most max_answer_length tokens
            s, e = np.unravel_index(scores.argmax(), scores.shape)
            if scores[s, e] > best_score:
                best_score = scores[s, e]
                best = context_text[offsets[w][idx[s]][0]:offsets[w][idx[e]][1]]
        return best


def cmrc_questions(path: str, n: int) -> list[tuple[str, str, list[str]]]:
    from hfkit.data.qa import read_squad_json

    ds = read_squad_json(path).select(range(n))
    return [(r["question"], r["context"], r["answers"]["text"]) for r in ds]


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def agreement(predictions: list[str], reference: list[str]) -> dict[str, float]:
    from hfkit.metrics import load_metric

    scores = load_metric("cmrc2018", keep_in_memory=True).compute(
        predictions=[{"id": str(i), "prediction_text": p} for i, p in enumerate(predictions)],
        references=[{"id": str(i), "answers": {"text": [r], "answer_start": [0]}}
                    for i, r in enumerate(reference)])
    return {"em": scores["exact_match"], "f1": scores["f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/cmrc2018/cmrc2018_dev.json")
    parser.add_argument("--model", help="a QA model folder (default: random bert-base, built here)")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20, help="timed calls of the example")
    parser.add_argument("--batch-size", type=int, help="windows per batch (default: answer's own)")
    args = parser.parse_args()

    from hfkit.inference import QuestionAnswerer, answer

    dev = cmrc_questions(args.data, args.questions)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or str(random_bert_base(Path(tmp) / "bert-base-qa",
                                                    [QUESTION, CONTEXT] + [q + c for q, c, _ in dev]))
        naive = Naive(folder)
        models = {"fp32": QuestionAnswerer(folder, device="cpu"),
                  "bf16": QuestionAnswerer(folder, device="cpu", precision="bf16")}
        questions, contexts = [q for q, _, _ in dev], [c for _, c, _ in dev]
        rows = []

        naive(QUESTION, CONTEXT)  # warm-up
        example = statistics.median(timed(lambda: naive(QUESTION, CONTEXT), args.repeat))
        started = time.perf_counter()
        reference = [naive(q, c) for q, c in zip(questions, contexts)]
        seconds = time.perf_counter() - started
        rows.append(("naive (pad to 384, fp32)", example, seconds, reference))

        for precision, qa in models.items():
            answer(QUESTION, CONTEXT, model=qa)  # warm-up
            example = statistics.median(timed(lambda qa=qa: answer(QUESTION, CONTEXT, model=qa),
                                              args.repeat))
            started = time.perf_counter()
            got = answer(questions, contexts, model=qa, batch_size=args.batch_size)
            seconds = time.perf_counter() - started
            rows.append((f"hfkit answer ({precision})", example, seconds, [r["answer"] for r in got]))

    n, base = len(dev), rows[0][2]
    print(f"\nExtractive QA on this CPU ({torch.get_num_threads()} threads), bert-base-sized model, "
          f"{n} CMRC 2018 dev questions")
    print("| approach | example: ms/question | dev: ms/question | dev: questions/s | speed-up "
          "| same answer as naive fp32 | EM / F1 against naive fp32 |\n|---|---:|---:|---:|---:|---:|---|")
    for name, example, seconds, preds in rows:
        agree = agreement(preds, reference)
        same = np.mean([p == r for p, r in zip(preds, reference)]) * 100
        print(f"| {name} | {example * 1000:.1f} | {seconds / n * 1000:.1f} | {n / seconds:.2f} "
              f"| {base / seconds:.2f}x | {same:.0f}% | {agree['em']:.1f} / {agree['f1']:.1f} |")
    truth = [a for _, _, a in dev]
    for name, _, _, preds in rows[:1] + rows[-1:]:
        scores = agreement(preds, [t[0] for t in truth])
        print(f"({name}: EM/F1 against the first reference answer: {scores['em']:.1f} / {scores['f1']:.1f}"
              " — random weights, so near zero; a real model folder via --model gives real numbers)")


if __name__ == "__main__":
    main()

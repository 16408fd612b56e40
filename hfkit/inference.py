"""Inference from a result folder or a Hub id: the same preprocessing as evaluation."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from hfkit.devices import default_device, onnx_device
from hfkit.lora import load_text_model
from hfkit.offline import is_hub_id, loading_weights
from hfkit.qa import top_spans
from hfkit.results import QA_DEFAULTS, is_export, read_result
from hfkit.text_models import position_limit

# The image pieces (timm with torchvision: about 3 s to import on a small CPU) load with the first
# image model, so that text commands do without them; hfkit.data.transforms keeps datasets out.


class ImageClassifier:
    """A trained image model with its own eval transform and class names."""

    def __init__(self, name_or_path: str, device: str | None = None, precision: str = "fp32") -> None:
        from hfkit.models import load_image_model

        self.device, self.autocast = default_device(device), _autocast_dtype(precision)
        self.use(load_image_model(name_or_path).to(self.device), name_or_path)

    def use(self, model, name_or_path: str) -> None:
        """Serve ``model`` with the preprocessing its ``pretrained_cfg`` asks for; any callable
        from a batch to logits with a ``pretrained_cfg`` will do (an ONNX session, in hfkit.export).
        A run evaluated with ``eval.tta_hflip`` is served so too: what it reported is what it answers."""
        from hfkit.data.transforms import batch_augment, decode_size, image_transforms, uses_tensor_pipeline
        from hfkit.models import label_names

        self.model = model
        self.tta_hflip = bool(read_result(name_or_path).section("eval").get("tta_hflip"))
        self.transform = image_transforms(model, is_training=False)
        if uses_tensor_pipeline(model):  # trained in memory: evaluation's own batch transform
            self.transform = _tensor_eval_transform(batch_augment(model))
        self.min_size = decode_size(model)
        self.labels = label_names(model)

    def load(self, image: str | os.PathLike | bytes | PIL.Image.Image) -> PIL.Image.Image:
        """Decode exactly as the evaluation set was decoded during training."""
        from hfkit.data.transforms import decode_image, to_rgb

        if isinstance(image, PIL.Image.Image):
            return to_rgb(image)
        return decode_image(image if isinstance(image, bytes) else os.fspath(image), self.min_size)

    @torch.inference_mode()
    def predict(self, images: Sequence, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) for each image, best first."""
        batch = torch.stack([self.transform(self.load(img)) for img in images]).to(self.device)
        with _autocast(self.device, self.autocast):
            logits = self.model(batch)
            if self.tta_hflip:  # the mean of the logits of each image and its mirror, as training evaluated
                logits = (logits + self.model(batch.flip(-1))) / 2
        probs = logits.float().softmax(-1)
        scores, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[(self.labels[i], s) for i, s in zip(idx.tolist(), sc.tolist())]
                for idx, sc in zip(indices, scores)]


def _autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a classifier's ``precision`` (None: fp32, no autocast). bf16 is how
    training evaluates a ``train.mixed_precision=bf16`` run: its numbers, about twice as fast on
    CPUs with AVX512-BF16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
    return None if precision == "fp32" else PRECISIONS[precision]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _tensor_eval_transform(augment):
    """PIL image -> the normalised tensor the in-memory evaluation computed for it."""
    from hfkit.data.transforms import to_rgb

    def transform(img: PIL.Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(to_rgb(img)).copy()).permute(2, 0, 1)
        return augment(pixels[None])[0]
    return transform


class TextClassifier:
    """A fine-tuned sequence classifier with its tokenizer; labels by name from ``id2label``."""

    def __init__(self, name_or_path: str, device: str | None = None, precision: str = "fp32") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device, self.autocast = default_device(device), _autocast_dtype(precision)
        with loading_weights(name_or_path):
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = load_text_model(AutoModelForSequenceClassification, name_or_path)
        self.model.to(self.device).eval()
        self.use(name_or_path)

    def use(self, name_or_path: str) -> None:
        """Labels, and texts cut where training and evaluation cut them (the run's data.max_length),
        else where the model stops (at most 512 tokens)."""
        self.labels = class_names(self.model.config)
        limit = min(position_limit(self.model.config, self.tokenizer), 512)
        self.max_length = min(read_result(name_or_path).max_length() or limit, limit)

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) for each text, best first; texts are padded per batch only."""
        enc = self.tokenizer(list(texts), truncation=True, padding=True, return_tensors="pt",
                             max_length=self.max_length).to(self.device)
        with _autocast(self.device, self.autocast):
            logits = self.model(**enc).logits
        probs = logits.float().softmax(-1)
        scores, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[(self.labels[i], s) for i, s in zip(idx.tolist(), sc.tolist())]
                for idx, sc in zip(indices, scores)]


def class_names(config) -> list[str]:
    """A transformers classifier's labels in index order, from its config's ``id2label``."""
    return [config.id2label[i] for i in range(config.num_labels)]


def generate(name_or_path: str, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             seed: int | None = None, stream: bool = False, device: str | None = None) -> str:
    """Continue ``prompt`` with a causal LM. ``temperature=0`` is greedy; a seed makes sampling repeat.

    With ``stream`` the text is printed token by token as it is produced. A prompt that leaves no
    room for ``max_new_tokens`` in the model's context is a ``ValueError``.
    """
    from transformers import TextStreamer

    model, tokenizer, options = _generation_setup(name_or_path, prompt, max_new_tokens, temperature, top_k,
                                                  top_p, repetition_penalty, seed, device)
    with torch.inference_mode():
        out = model.generate(**options, streamer=TextStreamer(tokenizer) if stream else None)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def generate_stream(name_or_path: str, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                    seed: int | None = None, device: str | None = None) -> Iterator[str]:
    """:func:`generate`, yielding the growing text (prompt and continuation so far) as tokens arrive.

    The last text yielded is what :func:`generate` returns for the same arguments. The model is
    loaded once per ``name_or_path`` and kept; generation runs in a thread while this yields.
    """
    from transformers import TextIteratorStreamer

    model, tokenizer, options = _generation_setup(name_or_path, prompt, max_new_tokens, temperature, top_k,
                                                  top_p, repetition_penalty, seed, device)
    streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**options, streamer=streamer)
        except BaseException as e:  # re-raised in the caller's thread below
            failed.append(e)
            streamer.end()  # unblocks the loop below

    thread = threading.Thread(target=run, name="hfkit-generate", daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        if piece:
            text += piece
            yield text
    thread.join()
    if failed:
        raise failed[0]


GREEDY_BELOW = 1e-3  # a sampling temperature below this generates greedily


def _generation_setup(name_or_path: str, prompt: str, max_new_tokens: int, temperature: float,
                      top_k: int | None, top_p: float | None, repetition_penalty: float, seed: int | None,
                      device: str | None):
    """(model, tokenizer, keyword arguments of ``model.generate``) for one prompt, checked."""
    from transformers import set_seed

    if not prompt:
        raise ValueError("the prompt is empty")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    model, tokenizer = _load_causal_lm(name_or_path, device)
    enc = tokenizer(prompt, return_tensors="pt").to(model.device)
    n = enc["input_ids"].shape[1]
    if getattr(model.config, "max_position_embeddings", None):
        limit = position_limit(model.config, tokenizer)
        if n + max_new_tokens > limit:
            room = f"at most {limit - n} new tokens" if n < limit else "no new tokens"
            raise ValueError(f"the prompt is too long: it is {n} tokens and this model reads at most {limit} "
                             f"(prompt and new tokens together), which leaves room for {room}. "
                             "Shorten the prompt or ask for fewer new tokens.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be 0 (greedy) or a positive number, got {temperature}")
    if seed is not None:
        set_seed(seed)
    # logits divided by a tiny temperature overflow to inf, and sampling them fails; the limit
    # of ever colder sampling is the greedy choice, which it is then
    sampling = temperature >= GREEDY_BELOW
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p) if sampling else {}
    options.update(enc, max_new_tokens=max_new_tokens, do_sample=sampling,
                   repetition_penalty=repetition_penalty,
                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return model, tokenizer, options


@functools.lru_cache(maxsize=2)
def _load_causal_lm(name_or_path: str, device: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_export(name_or_path):  # onnxruntime, driven by transformers' generate (hfkit.export)
        onnx_device(device)
        return read_result(name_or_path).predictor()(name_or_path)
    device = default_device(device)
    with loading_weights(name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = load_text_model(AutoModelForCausalLM, name_or_path)
    return model.to(device).eval(), tokenizer


# -- extractive question answering ---------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
MIN_CONTEXT_TOKENS = 16  # a window must hold at least this much context beside the question
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class QuestionAnswerer:
    """An extractive QA model (``*ForQuestionAnswering``) with its tokenizer, from a folder or Hub id.

    Works offline from a folder holding ``config.json``, ``pytorch_model.bin`` or
    ``model.safetensors``, and a tokenizer (``vocab.txt`` alone is enough for BERT-style models).
    ``precision="bf16"`` runs the model in bfloat16: faster on CPUs with AVX512-BF16 and on GPUs.
    """

    def __init__(self, name_or_path: str, device: str | None = None, precision: str = "fp32",
                 max_length: int = QA_DEFAULTS["max_length"],
                 doc_stride: int = QA_DEFAULTS["doc_stride"]) -> None:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
        _check_qa_folder(name_or_path)
        self.device = default_device(device)
        with loading_weights(name_or_path):
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = load_text_model(AutoModelForQuestionAnswering, name_or_path,
                                         dtype=PRECISIONS[precision])
        self.use(self.model.to(self.device).eval(), name_or_path, max_length, doc_stride)

    def use(self, model, name: str, max_length: int, doc_stride: int) -> None:
        """Answer with ``model``: a QA model, or any callable taking its inputs by name that returns
        ``start_logits``/``end_logits`` and has its ``config`` (an ONNX session, in hfkit.export)."""
        _check_qa_model(model.config, name)
        self.model = model
        self.max_length = min(max_length, position_limit(model.config, self.tokenizer))
        self.doc_stride = doc_stride

    def __call__(self, questions: Sequence[str], contexts: Sequence[str], top_k: int = 1,
                 max_answer_length: int = QA_DEFAULTS["max_answer_length"],
                 handle_impossible: bool = False, batch_size: int | None = None) -> list[list[dict]]:
        """The ``top_k`` best answers for each (question, context) pair; see :func:`answer`."""
        from hfkit.data.qa import QACollator, encode_windows
        from hfkit.qa import collect_answers

        stride = self._stride(questions, contexts)
        enc = encode_windows(self.tokenizer, list(questions), list(contexts), self.max_length, stride)
        _check_vocabulary(enc, self.tokenizer)
        n = len(enc["input_ids"])
        # on a CPU, small batches of similar length run as fast per window and waste less on padding
        batch_size = batch_size or (4 if self.device.type == "cpu" else 32)
        collate = QACollator(self.tokenizer)
        spans: dict[str, list] = {}
        order = sorted(range(n), key=lambda w: -len(enc["input_ids"][w]))  # little padding per batch
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                rows = [{k: enc[k][w] for k in (*QACollator.MODEL_KEYS, "context_mask") if k in enc}
                        for w in order[i:i + batch_size]]
                batch = {k: v.to(self.device) for k, v in collate(rows).items()}
                context_mask = batch.pop("context_mask")
                out = self.model(**batch)
                found = top_spans(out.start_logits, out.end_logits, context_mask, max_answer_length)
                for key, value in found.items():
                    spans.setdefault(key, []).extend(value.cpu().numpy())
        unsorted = {key: [None] * n for key in spans}
        for key, values in spans.items():
            for w, value in zip(order, values):
                unsorted[key][w] = value
        return collect_answers(unsorted, enc["example_index"], enc["offset_mapping"], list(contexts),
                               top_k=top_k, handle_impossible=handle_impossible)

    def _stride(self, questions: Sequence[str], contexts: Sequence[str]) -> int:
        """Check the inputs; the window overlap, shrunk when a long question leaves little room."""
        from hfkit.data.qa import window_room

        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        room = self.max_length
        for i, (q, c) in enumerate(zip(questions, contexts)):
            which = f" {i}" if len(questions) > 1 else ""
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"question{which} is empty: ask something about the context")
            if not isinstance(c, str) or not c.strip():
                raise ValueError(f"context{which} is empty: give the text that holds the answer")
            room = min(room, window_room(self.tokenizer, q, self.max_length))
            if room < MIN_CONTEXT_TOKENS:
                raise ValueError(
                    f"question{which} is too long: it leaves {max(room, 0)} of the window's "
                    f"{self.max_length} tokens for the context (at least {MIN_CONTEXT_TOKENS} are "
                    "needed). Shorten the question.")
        return min(self.doc_stride, room // 2)  # the tokenizer needs stride < context room


def answer(question: str | Sequence[str], context: str | Sequence[str],
           model: str | QuestionAnswerer = "uer/roberta-base-chinese-extractive-qa", top_k: int = 1,
           max_answer_length: int = QA_DEFAULTS["max_answer_length"],
           doc_stride: int = QA_DEFAULTS["doc_stride"], max_length: int = QA_DEFAULTS["max_length"],
           handle_impossible: bool = False, batch_size: int | None = None, device: str | None = None,
           precision: str = "fp32"):
    """Answer questions by pointing at a span of their context.

    ``question`` and ``context`` are strings, or equal-length lists (one context may serve many
    questions). Each answer is ``{"answer", "score", "start", "end"}`` with ``start``/``end``
    character offsets into the context. Returns one dict for one question with ``top_k=1``, a list
    of ``top_k`` dicts for one question, and a list of those for several questions (as the old
    transformers pipeline did). Contexts longer than the window are read in overlapping windows
    of ``max_length`` tokens, ``doc_stride`` tokens of overlap. Spans rank by their start + end
    logits across all windows, as ``run_qa.py`` ranks them; ``score`` is the softmax of those sums
    over the question's best answers (:mod:`hfkit.qa`). With ``handle_impossible`` the answer may
    be empty (SQuAD 2.0-style models), when the model's "no answer" logits (CLS) score best.
    ``model`` is a folder, a Hub id or a loaded :class:`QuestionAnswerer` (loaded models are
    kept, so repeated calls with the same name load once).

    >>> answer("谁是人工智能之父？", "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。",
    ...        model="./models/roberta-chinese-qa")                                # doctest: +SKIP
    {'answer': '艾伦·图灵', 'score': 0.97, 'start': 0, 'end': 5}
    """
    single = isinstance(question, str)
    questions = [question] if single else list(question)
    contexts = [context] * len(questions) if isinstance(context, str) else list(context)
    if not questions:
        return []
    qa = model if isinstance(model, QuestionAnswerer) else _load_answerer(
        model, device, precision, max_length, doc_stride)
    results = qa(questions, contexts, top_k=top_k, max_answer_length=max_answer_length,
                 handle_impossible=handle_impossible, batch_size=batch_size)
    if top_k == 1:
        results = [r[0] for r in results]
    return results[0] if single else results


def load_answerer(name_or_path: str, device: str | None = None, precision: str = "fp32",
                  max_length: int = QA_DEFAULTS["max_length"],
                  doc_stride: int = QA_DEFAULTS["doc_stride"]) -> QuestionAnswerer:
    """The :class:`QuestionAnswerer` of a folder or Hub id; onnxruntime's for an ONNX export folder
    (same windows, spans and answers)."""
    if is_export(name_or_path):
        return read_result(name_or_path).predictor()(name_or_path, device, precision=precision,
                                                     max_length=max_length, doc_stride=doc_stride)
    return QuestionAnswerer(name_or_path, device, precision, max_length, doc_stride)


_load_answerer = functools.lru_cache(maxsize=2)(load_answerer)  # answer() loads each model once


def _check_qa_folder(path: str) -> None:
    """A local folder must hold weights and a tokenizer; say which is missing and what to do."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        if not is_hub_id(path):
            raise FileNotFoundError(f"no model folder '{path}' (looked in {Path.cwd()})")
        return  # a Hub id
    names = {p.name for p in folder.iterdir()}
    if "config.json" not in names:
        raise FileNotFoundError(f"'{path}' has no config.json: is it a model folder?")
    if not any(n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin"))
               for n in names):
        raise FileNotFoundError(f"'{path}' has no weights (model.safetensors or pytorch_model.bin); "
                                "copy them next to config.json")
    if not names & set(TOKENIZER_FILES):
        raise FileNotFoundError(f"'{path}' has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}, ...); "
                                "copy the tokenizer files of the model it came from into it")


def _check_qa_model(config, name: str) -> None:
    arch = config.architectures or []
    if arch and not any(a.endswith("ForQuestionAnswering") for a in arch):
        raise ValueError(f"'{name}' is a {arch[0]}, not an extractive question-answering model: its answer "
                         "head would be random. Fine-tune it first, e.g. hfkit finetune --recipe cmrc2018 "
                         f"--set model.name={name}")


def _check_vocabulary(enc, tokenizer) -> None:
    """Most tokens unknown: the text is in a script the model never saw; its answers mean nothing."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return  # byte-level tokenizers know every text
    for w, ids in enumerate(enc["input_ids"]):
        known = sum(1 for t, m in zip(ids, enc["context_mask"][w]) if m and t != unk)
        total = sum(enc["context_mask"][w])
        if total and known < total / 2:
            raise ValueError(f"{total - known} of {total} context tokens are unknown to this model's "
                             "vocabulary: is the text in a language or script the model was trained on?")

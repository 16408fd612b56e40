"""Inference from a result folder or a Hub id: the same preprocessing as evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence

import PIL.Image
import torch

from hfkit.data.images import decode_image, decode_size, image_transforms
from hfkit.models import label_names, load_image_model


class ImageClassifier:
    """A trained image model with its own eval transform and class names."""

    def __init__(self, name_or_path: str, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_image_model(name_or_path).to(self.device)
        self.transform = image_transforms(self.model, is_training=False)
        self.min_size = decode_size(self.model)
        self.labels = label_names(self.model)

    def load(self, image: str | os.PathLike | bytes | PIL.Image.Image) -> PIL.Image.Image:
        """Decode exactly as the evaluation set was decoded during training."""
        if isinstance(image, PIL.Image.Image):
            return image.convert("RGB")
        return decode_image(image if isinstance(image, bytes) else os.fspath(image), self.min_size)

    @torch.inference_mode()
    def predict(self, images: Sequence, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) for each image, best first."""
        batch = torch.stack([self.transform(self.load(img)) for img in images]).to(self.device)
        probs = self.model(batch).float().softmax(-1)
        scores, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[(self.labels[i], s) for i, s in zip(idx.tolist(), sc.tolist())]
                for idx, sc in zip(indices, scores)]


class TextClassifier:
    """A fine-tuned sequence classifier with its tokenizer; labels by name from ``id2label``."""

    def __init__(self, name_or_path: str, device: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(self.device).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @torch.inference_mode()
    def predict(self, texts: Sequence[str], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) for each text, best first; texts are padded per batch only."""
        enc = self.tokenizer(list(texts), truncation=True, padding=True, return_tensors="pt",
                             max_length=min(self.tokenizer.model_max_length, 512)).to(self.device)
        probs = self.model(**enc).logits.float().softmax(-1)
        scores, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[(self.labels[i], s) for i, s in zip(idx.tolist(), sc.tolist())]
                for idx, sc in zip(indices, scores)]


def generate(name_or_path: str, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             seed: int | None = None, stream: bool = False, device: str | None = None) -> str:
    """Continue ``prompt`` with a causal LM. ``temperature=0`` is greedy; a seed makes sampling repeat.

    With ``stream`` the text is printed token by token as it is produced.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

    if not prompt:
        raise ValueError("the prompt is empty")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path).to(device).eval()
    if seed is not None:
        set_seed(seed)
    sampling = temperature > 0
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p) if sampling else {}
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sampling,
                             repetition_penalty=repetition_penalty,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                             streamer=TextStreamer(tokenizer) if stream else None, **options)
    return tokenizer.decode(out[0], skip_special_tokens=True)

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

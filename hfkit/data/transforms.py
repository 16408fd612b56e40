"""What a model sees of an image: decoded 8-bit RGB, timm's per-image transforms for the model,
and the batch transform of sets held in memory (``BatchAugment``: augmentation and normalisation
on the device, the same code in training, evaluation and ``hfkit predict``).

Nothing here imports ``datasets``: an image prediction needs only these pieces, and so skips
its 1.2 s of imports (with pandas and pyarrow) on a small CPU.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from timm.data import create_transform, resolve_data_config

from hfkit.recipes import RecipeError

# what PIL raises for a file that is not an image it can decode: empty, text, truncated, a bomb
UNREADABLE = (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError)


def image_transforms(model: torch.nn.Module, is_training: bool, **overrides: Any) -> Callable:
    """The transform the model's own ``pretrained_cfg`` asks for (size, mean/std, crop)."""
    config = resolve_data_config({}, model=model)
    return create_transform(**config, is_training=is_training, **overrides)


def check_auto_augment(policy: str | None) -> None:
    """RecipeError naming ``data.auto_augment`` unless timm knows the policy: said before the
    images are read, in place of the bare AssertionError timm raises when it builds it."""
    if not policy:
        return
    try:
        create_transform(32, is_training=True, auto_augment=policy)
    except (AssertionError, KeyError, ValueError, IndexError) as e:
        raise RecipeError(
            f"data.auto_augment: '{policy}' is not a timm augmentation policy{f' ({e})' if str(e) else ''}; "
            "e.g. rand-m9-mstd0.5-inc1 (RandAugment), original or v0 (AutoAugment), augmix-m5-w4-d2 "
            "(AugMix), or null for none") from None


def decode_size(model: torch.nn.Module) -> int:
    """Smallest side kept when decoding: twice the input size leaves room for random crops."""
    return 2 * max(resolve_data_config({}, model=model)["input_size"][1:])


MAX_ASPECT = 50  # an image longer than this many times its width (or wider) is refused


def decode_image(source: str | bytes | os.PathLike, min_size: int | None = None) -> PIL.Image.Image:
    """Open an image file or bytes as RGB; JPEGs decode directly at >= ``min_size`` pixels.

    Refused before decoding (as unreadable): more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``, where
    Pillow itself only warns up to twice that (a 20 kB PNG can hold 169M pixels, 500 MB decoded),
    and a strip beyond ``MAX_ASPECT``:1, which resizing its short side to the model's input size
    would blow up (1 x 300,000 pixels to 224 x 67M).
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with PIL.Image.open(fp) as img:  # reads the header only
        # checked here rather than by turning Pillow's warning into an error: warning filters are
        # global, and the server decodes in several threads
        limit = PIL.Image.MAX_IMAGE_PIXELS
        if limit and img.width * img.height > limit:
            raise PIL.Image.DecompressionBombError(
                f"{img.width}x{img.height} pixels, over the limit of {limit} "
                "(PIL.Image.MAX_IMAGE_PIXELS): it could be a decompression bomb")
        if max(img.size) > MAX_ASPECT * min(img.size):
            raise ValueError(f"{img.width}x{img.height} pixels: longer than {MAX_ASPECT}:1, too "
                             "elongated to resize for a model")
        if min_size and img.format == "JPEG":
            img.draft("RGB", (min_size, min_size))  # DCT scaling: 2592px decodes as 648px
        return to_rgb(img)  # forces a full decode, so truncated files fail here


def to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """8-bit RGB. Pillow's ``convert("RGB")`` clips 16-bit grey levels (0..65535) at 255, so a
    16-bit PNG would come out nearly white: those are scaled to 8 bits first. Palette images with
    transparency go through RGBA to keep their colours."""
    if img.mode.startswith("I;16") or img.mode == "I":
        img = PIL.Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


@dataclass
class BatchAugment:
    """Augment and normalise uint8 batches on their device: random crop with reflect padding, flip,
    brightness/contrast jitter and random erasing in training; then resize to the model's input
    size and normalise with its mean/std (the only steps in evaluation).
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad: int = 4
    hflip: float = 0.5
    jitter: float = 0.0
    erase: float = 0.0
    interpolation: str = "bilinear"
    channels_last: bool = False
    erase_size: int | None = None
    _normalize: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, images: torch.Tensor, seed: int | torch.Tensor | None = None,
                 train: bool = False) -> torch.Tensor:
        if train:
            generator = torch.Generator(device=images.device)
            generator.manual_seed(int(seed) if seed is not None else torch.seed())
            images = self.crop_and_flip(images, generator)
        x = images.float()
        if train and self.jitter > 0:
            x = self.color_jitter(x, generator)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation,
                              align_corners=False, antialias=self.interpolation != "nearest"
                              and x.shape[-1] > self.input_size).clamp_(0, 255)
        x = torch.addcmul(*self.normalization(x.device), x)
        if train and self.erase > 0:
            x = self.random_erase(x, generator)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def normalization(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) with x * scale + shift = (x / 255 - mean) / std, made once per device
        (a tensor made from Python numbers is a copy to the GPU that waits for it)."""
        if device not in self._normalize:
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            scale, shift = 1 / (255 * std), -torch.tensor(self.mean).view(1, 3, 1, 1) / std
            self._normalize[device] = (shift.to(device), scale.to(device))
        return self._normalize[device]

    def crop_and_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per image: a random crop (same size) of the image padded by ``pad`` pixels on each side,
        flipped with probability ``hflip``.

        The padding reflects the border (as fast CIFAR pipelines do) rather than adding black,
        so the pixel statistics the normalisation expects stay those of the data; it is done by
        index arithmetic in one gather, without materialising a padded copy.
        """
        n, c, h, w = images.shape
        device = images.device
        dy = torch.randint(-self.pad, self.pad + 1, (n,), device=device, generator=generator)
        dx = torch.randint(-self.pad, self.pad + 1, (n,), device=device, generator=generator)
        rows = _reflect(dy[:, None] + torch.arange(h, device=device), h)  # [n, h]
        cols = _reflect(dx[:, None] + torch.arange(w, device=device), w)  # [n, w]
        flip = torch.rand(n, device=device, generator=generator) < self.hflip
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        # one gather over each image's flattened pixels (3x faster than 3-d advanced indexing)
        index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        return images.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)

    def color_jitter(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Brightness and contrast, each a factor in [1 - jitter, 1 + jitter] per image, on 0..255
        pixels: (x - m) * c + m * b, computed as one per-image multiply-add, then clipped."""
        n = x.shape[0]
        brightness, contrast = (1 + (torch.rand(n, 1, 1, 1, device=x.device, generator=generator) * 2 - 1)
                                * self.jitter for _ in range(2))
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return torch.addcmul(mean * (brightness - contrast), x, contrast).clamp_(0, 255)

    def random_erase(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Cutout: with probability ``erase`` a square of ``erase_size`` pixels (default 1/4 of the
        side) centred anywhere in the image is set to 0 (the mean).

        Not timm's RandomErasing: that loops over the batch in Python drawing from Python's
        ``random`` (so a resumed run would not erase what the uninterrupted one did, and a GPU
        waits for hundreds of small kernels a batch), and it erases random rectangles inside the
        image, where Cutout's fixed square may cross the border."""
        n, _, h, w = x.shape
        side = self.erase_size or max(1, h // 4)
        cy = torch.randint(0, h, (n, 1, 1), device=x.device, generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), device=x.device, generator=generator)
        ys = torch.arange(h, device=x.device)[None, :, None] - cy + side // 2  # 0..side-1 inside
        xs = torch.arange(w, device=x.device)[None, None, :] - cx + side // 2
        hit = (ys >= 0) & (ys < side) & (xs >= 0) & (xs < side)
        hit &= (torch.rand(n, 1, 1, device=x.device, generator=generator) < self.erase)
        return x.masked_fill(hit[:, None], 0.0)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored at the border without repeating it (numpy "reflect")."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def batch_augment(model: torch.nn.Module, args=None, channels_last: bool = False) -> BatchAugment:
    """The batch transform for ``model``'s input size, mean/std and interpolation; training
    augmentation strengths from the recipe's ``data`` section (none without one)."""
    config = resolve_data_config({}, model=model)
    train = dict(pad=args.crop_padding, hflip=args.hflip, jitter=args.color_jitter,
                 erase=args.random_erasing, erase_size=args.erase_size) if args is not None else {}
    interpolation = "bicubic" if config["interpolation"] == "bicubic" else "bilinear"
    return BatchAugment(input_size=config["input_size"][-1], mean=tuple(config["mean"]),
                        std=tuple(config["std"]), interpolation=interpolation,
                        channels_last=channels_last, **train)


def serve_like_tensor_pipeline(model: torch.nn.Module) -> None:
    """Mark the model as trained on whole, squashed images (no centre crop): timm's own eval
    transform then resizes like the batch pipeline, and ``hfkit predict`` uses the pipeline itself."""
    model.pretrained_cfg = dict(model.pretrained_cfg, crop_pct=1.0, crop_mode="squash")


def uses_tensor_pipeline(model: torch.nn.Module) -> bool:
    cfg = model.pretrained_cfg
    return cfg.get("crop_mode") == "squash" and cfg.get("crop_pct") == 1.0

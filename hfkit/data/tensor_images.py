"""Small image sets held in memory as one uint8 tensor and augmented in batches on the device.

CIFAR-10 (50,000 x 32x32) is 150 MB as uint8, Tiny ImageNet (100,000 x 64x64) 1.2 GB: both
fit. Decoding once and cropping, flipping and resizing whole batches on the training device
removes the per-image PIL work that keeps a GPU waiting (and most of a CPU's data time).
The same code does evaluation and ``hfkit predict``, so serving sees exactly what evaluation saw.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import datasets
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hfkit.data.images import UNREADABLE, EpochSampler, describe_source, to_rgb

# the images of a set this size or smaller are decoded into memory when data.in_memory is unset
IN_MEMORY_LIMIT_BYTES = 4 * 1024**3
logger = logging.getLogger(__name__)


def decode_all(ds: datasets.Dataset, image_col: str, size: int | None = None,
               desc: str = "Decoding") -> torch.Tensor:
    """Every image of ``ds`` as one uint8 tensor [N, 3, H, W] (RGB); an unreadable one is an error
    that names it.

    Images must share one size, or ``size`` resizes each to ``size`` x ``size`` (bilinear).
    """
    images, _, skipped = decode_readable(ds, image_col, size, desc)
    if skipped:
        raise ValueError(f"{len(skipped)} unreadable images: {'; '.join(skipped[:5])}")
    return images


def decode_readable(ds: datasets.Dataset, image_col: str, size: int | None = None,
                    desc: str = "Decoding") -> tuple[torch.Tensor, list[int], list[str]]:
    """The readable images of ``ds`` as one uint8 tensor, the row of each, and the unreadable
    files, which are left out (and logged with the reason) as the per-image path leaves them out."""
    entries = ds.cast_column(image_col, datasets.Image(decode=False))[image_col]

    def load(entry) -> np.ndarray:
        source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry["path"]
        with PIL.Image.open(source) as img:
            img = to_rgb(img)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), PIL.Image.BILINEAR)
            return np.asarray(img)

    # one thread: small images decode in microseconds, and threads only fight over the GIL
    # (measured: 50,000 CIFAR PNGs in ~4 s serially, ~9 s in a 2-thread pool)
    arrays, rows, skipped = [], [], []
    for i, entry in enumerate(tqdm(entries, desc=desc, unit="img", leave=False)):
        try:
            arrays.append(load(entry))
            rows.append(i)
        except UNREADABLE as e:
            skipped.append(describe_source(entry.get("path") or b"", i))
            logger.warning("skipping unreadable image %s (%s: %s)", skipped[-1], type(e).__name__, e)
    if not arrays:
        raise ValueError(f"no readable images in {desc.lower()}: {', '.join(skipped[:3])}, ...")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:4]}: set data.image_size to "
                         "resize them to one size, or data.in_memory=false")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), rows, skipped


class TensorImages(torch.utils.data.Dataset):
    """uint8 images [N, 3, H, W] with labels; a batch is one indexing operation.

    Indexed by ``(epoch, i)`` like :class:`hfkit.data.images.ImageDataset`; each batch also
    carries a seed derived from (seed, epoch, first index), so batch augmentation repeats
    exactly after a resume.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | list[int], seed: int = 0) -> None:
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.seed = seed
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        return self.__getitems__([key])

    def __getitems__(self, keys: list) -> tuple[torch.Tensor, torch.Tensor, int]:
        if isinstance(keys[0], tuple):
            (epoch, first), index = keys[0], torch.tensor([i for _, i in keys])
        else:
            epoch, first, index = 0, int(keys[0]), torch.tensor(keys)
        seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + first
        # the seed stays a Python int: moved to a GPU with the batch, reading it back would wait
        return self.images[index], self.labels[index], seed % 2**62

    def image(self, i: int) -> PIL.Image.Image:
        return PIL.Image.fromarray(self.images[i].permute(1, 2, 0).numpy())


def collate_batch(batch):
    """``__getitems__`` already returns the batch."""
    return batch


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


# -- recipe plumbing ----------------------------------------------------------------------------

SMALL_IMAGE = 96  # px: sets of images this small (CIFAR 32, Tiny ImageNet 64) go in memory


def want_in_memory(args, train: datasets.Dataset, image_col: str) -> bool:
    """``data.in_memory``, or by default: small images, no PIL-only augmentation, fits in memory."""
    if args.in_memory is not None:
        return args.in_memory
    if args.auto_augment or len(train) == 0:
        return False
    first = train.cast_column(image_col, datasets.Image())[0][image_col]
    width, height = first.size
    return max(width, height) <= SMALL_IMAGE and 3 * width * height * len(train) <= IN_MEMORY_LIMIT_BYTES


def batch_augment(model: torch.nn.Module, args=None, channels_last: bool = False) -> BatchAugment:
    """The batch transform for ``model``'s input size, mean/std and interpolation; training
    augmentation strengths from the recipe's ``data`` section (none without one)."""
    from timm.data import resolve_data_config

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


def tensor_datasets(splits, seed: int, size: int | None = None
                    ) -> tuple[TensorImages, TensorImages, list[str]]:
    """Both splits of an :class:`hfkit.data.images.ImageSplits`, decoded into memory (resized to
    ``size`` if given: ``data.image_size``), and the unreadable files left out."""
    made, skipped = [], []
    for name, ds in (("train", splits.train), ("eval", splits.eval)):
        images, rows, unreadable = decode_readable(ds, splits.image_column, size,
                                                   desc=f"Decoding {name} images")
        labels = ds[splits.label_column]
        made.append(TensorImages(images, [labels[i] for i in rows], seed))
        skipped += unreadable
    return made[0], made[1], skipped


def make_tensor_loader(ds: TensorImages, batch_size: int, shuffle: bool, seed: int,
                       drop_last: bool = False) -> torch.utils.data.DataLoader:
    """Batches by one indexing operation each (no workers needed), in a (seed, epoch) order."""
    sampler = EpochSampler(len(ds), seed, shuffle)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate_batch,
                                       num_workers=0, pin_memory=torch.cuda.is_available(),
                                       drop_last=drop_last)

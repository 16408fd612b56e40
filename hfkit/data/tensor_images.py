"""Small image sets held in memory as one uint8 tensor, batched by indexing.

CIFAR-10 (50,000 x 32x32) is 150 MB as uint8, Tiny ImageNet (100,000 x 64x64) 1.2 GB: both
fit. Decoding once and cropping, flipping and resizing whole batches on the training device
(``hfkit.data.transforms.BatchAugment``) removes the per-image PIL work that keeps a GPU waiting
(and most of a CPU's data time). The same batch transform does evaluation and ``hfkit predict``,
so serving sees exactly what evaluation saw.
"""

from __future__ import annotations

import io
import logging

import datasets
import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from hfkit.data.images import EpochSampler, describe_source
from hfkit.data.transforms import UNREADABLE, to_rgb

# the images of a set this size or smaller are decoded into memory when data.in_memory is unset
IN_MEMORY_LIMIT_BYTES = 4 * 1024**3
logger = logging.getLogger(__name__)


def decode_all(ds: datasets.Dataset, image_col: str, size: int | None = None,
               desc: str = "Decoding") -> torch.Tensor:
    """Every image of ``ds`` as one uint8 tensor [N, 3, H, W] (RGB); an unreadable one is an error
    that names it.

    Images of one size stay as they are (the batch transform resizes them on the training
    device); images of several sizes are resized to ``size`` x ``size`` (bilinear) to be stacked.
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
            return np.asarray(to_rgb(img))

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
    if len(shapes) > 1 and size is not None:
        # only now: resizing images that share a size at decode (Tiny ImageNet's 64 px to 224)
        # would hold 12x their pixels in memory, 15 GB for its 100,000 training images
        arrays = [a if a.shape[:2] == (size, size) else
                  np.asarray(PIL.Image.fromarray(a).resize((size, size), PIL.Image.BILINEAR)) for a in arrays]
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


def tensor_datasets(splits, seed: int, size: int | None = None
                    ) -> tuple[TensorImages, TensorImages, list[str]]:
    """Both splits of an :class:`hfkit.data.images.ImageSplits`, decoded into memory at their own
    size (a split of images of several sizes resized to ``size``: ``data.image_size``), and the
    unreadable files left out."""
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

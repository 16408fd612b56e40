"""Raw CIFAR pickles and Tiny ImageNet folders, read as they are downloaded (hfkit.data.layouts)."""

from __future__ import annotations

import functools
import http.server
import pickle
import shutil
import tarfile
import threading
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import SHARED_DATA, make_image

from hfkit.data.images import load_image_splits
from hfkit.data.layouts import class_names, detect_layout, read_cifar_pickles, read_tiny_imagenet
from hfkit.data.sources import load_splits
from hfkit.data.tensor_images import decode_all
from hfkit.recipes import DataArgs

# ---------------------------------------------------------------------------------------------
# CIFAR python pickles

CIFAR_NAMES = ["airplane", "automobile", "bird"]
PATTERN = (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32)  # the blue plane of every image


def cifar_images(labels: list[int], start: int) -> np.ndarray:
    """Rows of uint8 [N, 3072] in CIFAR's CHW order: red = 100 * label, green = a running index."""
    planes = np.zeros((len(labels), 3, 32, 32), np.uint8)
    planes[:, 0] = (100 * np.asarray(labels))[:, None, None]
    planes[:, 1] = (start + np.arange(len(labels)))[:, None, None]
    planes[:, 2] = PATTERN
    return planes.reshape(len(labels), -1)


def _dump(path: Path, content: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(content, f)


def write_cifar10(root: Path, batches=((0, 1, 2, 2, 1, 0), (2, 0, 1, 1)), test=(1, 2, 0, 0, 2)) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES],
                                    b"num_cases_per_batch": 6, b"num_vis": 3072})
    start = 0
    for name, labels in [(f"data_batch_{i + 1}", b) for i, b in enumerate(batches)] + [("test_batch", test)]:
        _dump(folder / name, {b"batch_label": name.encode(), b"labels": list(labels),
                              b"data": cifar_images(list(labels), start),
                              b"filenames": [f"img_{start + i}.png".encode() for i in range(len(labels))]})
        start += len(labels)
    (folder / "readme.html").write_text("<html>CIFAR-10</html>")
    return folder


@pytest.fixture
def cifar_folder(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "download")


def check_cifar_pixels(images: np.ndarray, labels, first_index: int) -> None:
    """``images`` [N, 32, 32, 3]: each still carries its own label and index, and its pattern."""
    assert images.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(images[:, 0, 0, 0], 100 * np.asarray(labels))
    np.testing.assert_array_equal(images[:, 0, 0, 1], first_index + np.arange(len(images)))
    assert (images[..., 2] == PATTERN).all()


def test_cifar_pickles_read_as_the_hub_dataset(cifar_folder):
    splits = read_cifar_pickles(cifar_folder)
    assert set(splits) == {"train", "test"}
    assert splits["train"].column_names == ["img", "label"]
    assert isinstance(splits["train"].features["img"], datasets.Image)
    assert splits["train"].features["label"].names == CIFAR_NAMES
    assert splits["train"]["label"][:] == [0, 1, 2, 2, 1, 0, 2, 0, 1, 1]  # batch 1, then batch 2
    assert len(splits["test"]) == 5
    raw = splits["train"].cast_column("img", datasets.Image(decode=False))[0]["img"]
    assert raw["path"] is None and raw["bytes"].startswith(b"\x89PNG")
    for split, first in (("train", 0), ("test", 10)):
        ds = splits[split]
        check_cifar_pixels(np.stack([np.asarray(im) for im in ds["img"]]), ds["label"][:], first)


def test_cifar_through_load_splits_and_load_image_splits(cifar_folder):
    # the folder itself, and its parent (which holds only cifar-10-batches-py/)
    for path in (cifar_folder, cifar_folder.parent):
        assert load_splits(str(path))["train"].features["label"].names == CIFAR_NAMES
    splits = load_image_splits(DataArgs(path=str(cifar_folder.parent)), seed=0)
    assert (splits.image_column, splits.label_column) == ("img", "label")
    assert splits.label_names == CIFAR_NAMES
    assert len(splits.train) == 10 and len(splits.eval) == 5  # eval split: test
    images = decode_all(splits.eval, splits.image_column)  # the in-memory training path
    check_cifar_pixels(images.permute(0, 2, 3, 1).numpy(), splits.eval["label"][:], 10)


@pytest.mark.parametrize("how", ["file", "url"])
def test_cifar_tar_gz_is_extracted_and_read(cifar_folder, tmp_path, monkeypatch, how):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_folder, arcname=cifar_folder.name)
    if how == "file":
        splits = load_image_splits(DataArgs(path=str(archive), max_train_samples=4), seed=0)
    else:
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        try:
            splits = load_image_splits(DataArgs(path=url, max_train_samples=4), seed=0)
        finally:
            server.shutdown()
            server.server_close()
    assert splits.label_names == CIFAR_NAMES
    assert len(splits.train) == 4 and len(splits.eval) == 5
    images = decode_all(splits.train, "img").permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(images[:, 0, 0, 0], 100 * np.asarray(splits.train["label"][:]))


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "meta", {b"fine_label_names": [b"apple", b"bear", b"beaver"],
                            b"coarse_label_names": [b"fruit", b"mammals"]})
    for name, fine, start in (("train", [0, 1, 2, 1], 0), ("test", [2, 0], 4)):
        _dump(folder / name, {b"data": cifar_images(fine, start), b"fine_labels": fine,
                              b"coarse_labels": [0 if f == 0 else 1 for f in fine],
                              b"filenames": [b"x.png"] * len(fine)})
    splits = load_splits(str(tmp_path))
    assert splits["train"].column_names == ["img", "label", "coarse_label"]
    assert splits["train"].features["label"].names == ["apple", "bear", "beaver"]
    assert splits["test"]["coarse_label"][:] == [1, 0]
    check_cifar_pixels(np.stack([np.asarray(im) for im in splits["test"]["img"]]), [2, 0], 4)


def test_cifar_errors_name_the_file(cifar_folder):
    (cifar_folder / "test_batch").unlink()
    with pytest.raises(ValueError, match="test_batch"):
        load_splits(str(cifar_folder))
    (cifar_folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="test_batch.*not a CIFAR python pickle"):
        read_cifar_pickles(cifar_folder)
    _dump(cifar_folder / "test_batch", {b"data": cifar_images([0, 7], 0), b"labels": [0, 7]})
    with pytest.raises(ValueError, match="test_batch.*labels must be 0..2"):
        read_cifar_pickles(cifar_folder)
    _dump(cifar_folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"test_batch.*uint8 \[N, 3072\]"):
        read_cifar_pickles(cifar_folder)
    (cifar_folder / "batches.meta").unlink()
    with pytest.raises(ValueError, match="batches.meta"):
        read_cifar_pickles(cifar_folder)


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet

TINY = {"n01443537": (230, 200, 40), "n01629819": (60, 40, 200), "n01641577": (40, 200, 60)}
WORDS = {
    "n00001740": "entity",
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander, Salamandra salamandra",
    "n01641577": "bullfrog, Rana catesbeiana",
    "n01644373": "tree frog, tree-frog",  # in words.txt, not in wnids.txt
}


def write_tiny_imagenet(root: Path, per_class: int = 4, val_per_class: int = 2) -> Path:
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(TINY) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{text}\n" for w, text in WORDS.items()))
    for c, (wnid, color) in enumerate(TINY.items()):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            make_image(color, size=(16, 16), seed=100 * c + i).save(images / f"{wnid}_{i}.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{i}.JPEG\t0\t0\t15\t15\n" for i in range(per_class)))
    (root / "val" / "images").mkdir(parents=True)
    lines, n = [], 0
    for _ in range(val_per_class):
        for wnid in [*TINY, "n01644373"]:  # the last class is not in wnids.txt: skipped
            color = TINY.get(wnid, (128, 128, 128))
            make_image(color, size=(16, 16), seed=1000 + n).save(root / "val" / "images" / f"val_{n}.JPEG")
            lines.append(f"val_{n}.JPEG\t{wnid}\t1\t2\t14\t15\n")
            n += 1
    lines.append("val_999.JPEG\tn09999999\t0\t0\t1\t1\n")  # unknown class, and no file: skipped too
    (root / "val" / "val_annotations.txt").write_text("".join(lines))
    (root / "test" / "images").mkdir(parents=True)
    make_image((0, 0, 0), size=(16, 16)).save(root / "test" / "images" / "test_0.JPEG")
    return root


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return write_tiny_imagenet(tmp_path / "tiny" / "tiny-imagenet-200")


def nearest_class(image) -> int:
    mean = np.asarray(image.convert("RGB"), dtype=float).mean(axis=(0, 1))
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in TINY.values()]))


def test_tiny_imagenet_read_directly(tiny_root):
    splits = read_tiny_imagenet(tiny_root)
    assert set(splits) == {"train", "validation"}
    train, val = splits["train"], splits["validation"]
    assert train.column_names == ["image", "label"]
    assert train.features["label"].names == ["goldfish", "European fire salamander", "bullfrog"]
    assert len(train) == 12 and len(val) == 6  # 2 val images of n01644373 + one unknown skipped
    assert train["label"][:] == [0] * 4 + [1] * 4 + [2] * 4
    assert val["label"][:] == [0, 1, 2, 0, 1, 2]
    raw = train.cast_column("image", datasets.Image(decode=False))["image"][:]
    assert all(r["bytes"] is None and Path(r["path"]).is_file() for r in raw)  # by path, no copy
    assert Path(raw[1]["path"]).name == "n01443537_1.JPEG"
    for ds in (train, val):
        assert [nearest_class(im) for im in ds["image"]] == ds["label"][:]


def test_tiny_imagenet_through_load_image_splits(tiny_root):
    for path in (tiny_root, tiny_root.parent):
        splits = load_image_splits(DataArgs(path=str(path)), seed=0)
        assert (splits.image_column, splits.label_column) == ("image", "label")
        assert splits.label_names[0] == "goldfish"
        assert len(splits.train) == 12 and len(splits.eval) == 6  # eval split: validation
    images = decode_all(splits.eval, "image")
    assert images.shape == (6, 3, 16, 16)


def test_tiny_imagenet_zip_is_extracted_and_read(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    archive = shutil.make_archive(str(tmp_path / "tiny-imagenet-200"), "zip", tiny_root.parent,
                                  tiny_root.name)
    splits = load_splits(archive)
    assert len(splits["train"]) == 12 and len(splits["validation"]) == 6


def test_class_names_disambiguate_duplicates(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("n03710637\tmaillot\nn03710721\tmaillot, tank suit\nn01443537\tgoldfish, carp\n")
    assert class_names(["n01443537", "n03710637", "n03710721", "n09999999"], words) == [
        "goldfish", "maillot (n03710637)", "maillot (n03710721)", "n09999999"]


def test_tiny_imagenet_errors_name_the_file(tiny_root):
    (tiny_root / "val" / "images" / "val_4.JPEG").unlink()
    with pytest.raises(ValueError, match=r"val_annotations.txt, line 5: lists val_4.JPEG"):
        read_tiny_imagenet(tiny_root)
    (tiny_root / "val" / "val_annotations.txt").write_text("val_0.JPEG n01443537\n")
    with pytest.raises(ValueError, match="val_annotations.txt, line 1: expected"):
        read_tiny_imagenet(tiny_root)
    (tiny_root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(ValueError, match="val_annotations.txt: missing"):
        read_tiny_imagenet(tiny_root)
    empty = tiny_root / "train" / "n01629819" / "images"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="n01629819/images: no images"):
        read_tiny_imagenet(tiny_root)
    (tiny_root / "wnids.txt").unlink()
    assert detect_layout(tiny_root) is None  # no wnids.txt and no val_annotations.txt
    with pytest.raises(ValueError, match="wnids.txt: missing"):
        read_tiny_imagenet(tiny_root)


@pytest.mark.parametrize("where", ["val", "wnids"])
@pytest.mark.parametrize("name", ["../../../outside.JPEG", "/abs/outside.JPEG", "..\\outside.JPEG"])
def test_tiny_imagenet_files_that_name_images_outside_the_folder_are_refused(tiny_root, where, name):
    outside = (tiny_root / name.replace("\\", "/")) if not name.startswith("/") else None
    if outside is not None:  # the image is there: a run would read it, were the name taken
        outside.resolve().parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_root / "val" / "images" / "val_0.JPEG", outside.resolve())
    if where == "val":
        annotations = tiny_root / "val" / "val_annotations.txt"
        annotations.write_text(annotations.read_text() + f"{name}\tn01443537\t0\t0\t1\t1\n")
        line = len(annotations.read_text().splitlines())
        refused = rf"val_annotations.txt, line {line}: '.*outside.JPEG' is not a file name inside val/images/"
    else:
        (tiny_root / "wnids.txt").write_text((tiny_root / "wnids.txt").read_text() + name + "\n")
        refused = r"wnids.txt, class 4: '.*outside.JPEG' is not a folder name inside train/"
    with pytest.raises(ValueError, match=refused):
        read_tiny_imagenet(tiny_root)
    with pytest.raises(ValueError, match=refused):
        load_splits(str(tiny_root))


def test_missing_wnids_is_an_error_through_load_splits(tiny_root):
    (tiny_root / "wnids.txt").unlink()
    with pytest.raises(ValueError, match="wnids.txt: missing"):
        load_splits(str(tiny_root))


# ---------------------------------------------------------------------------------------------
# detect_layout


def test_detect_layout(cifar_folder, tiny_root, image_folder, tmp_path):
    assert detect_layout(cifar_folder).func is read_cifar_pickles
    assert detect_layout(tiny_root).func is read_tiny_imagenet
    (cifar_folder.parent / "cifar-10-python.tar.gz").write_bytes(b"")  # the download, kept beside
    assert detect_layout(cifar_folder.parent).args == (cifar_folder,)
    assert detect_layout(tiny_root.parent).args == (tiny_root,)
    assert detect_layout(image_folder) is None  # imagefolder layout: left to datasets
    assert detect_layout(tmp_path) is None  # several folders, none of them a layout itself
    assert detect_layout(tmp_path / "missing") is None


# ---------------------------------------------------------------------------------------------
# The real data sets in ../shared/data (skipped where absent)

REAL_TINY = SHARED_DATA / "tiny-imagenet-200"
REAL_CIFAR = SHARED_DATA / "cifar10"


@pytest.mark.skipif(not REAL_TINY.is_dir(), reason=f"{REAL_TINY} not present")
def test_real_tiny_imagenet_subset():
    wnids = (REAL_TINY / "wnids.txt").read_text().split()
    # the 20-class subset's val_annotations.txt lists only its own classes (1,000 of 10,000)
    listed = {line.split("\t")[1] for line in (REAL_TINY / "val" / "val_annotations.txt").open()}
    assert listed <= set(wnids)
    splits = load_splits(str(REAL_TINY))
    names = splits["train"].features["label"].names
    assert len(names) == len(wnids) == 20
    assert "Egyptian cat" in names and "German shepherd" in names
    assert not any(n.startswith("n0") for n in names)
    assert len(splits["train"]) == 10_000 and len(splits["validation"]) == 1_000
    assert np.bincount(splits["validation"]["label"][:]).tolist() == [50] * 20
    first = splits["train"][0]
    assert first["image"].size == (64, 64) and first["label"] == 0
    image_splits = load_image_splits(DataArgs(path=str(REAL_TINY)), seed=0)
    assert image_splits.label_names == names and len(image_splits.eval) == 1_000


@pytest.mark.skipif(not REAL_CIFAR.is_dir(), reason=f"{REAL_CIFAR} not present")
def test_real_cifar10_parquet_layout_is_untouched():
    assert detect_layout(REAL_CIFAR) is None
    splits = load_splits(str(REAL_CIFAR))
    assert len(splits["train"]) == 50_000 and len(splits["test"]) == 10_000
    assert splits["train"].features["label"].names[:2] == ["airplane", "automobile"]
    assert isinstance(splits["train"].features["img"], datasets.Image)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_in_cifar_pickles_of_every_protocol_load(cifar_folder, protocol):
    """Python 2's protocol 2 (the official files), and what Python 3 writes by default or with 5."""
    import numpy as np

    from hfkit.data.layouts import _unpickle

    batch = {b"labels": [1, 2], b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)}
    path = cifar_folder / "extra_batch"
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    loaded = _unpickle(path)
    assert loaded[b"labels"] == [1, 2] and np.array_equal(loaded[b"data"], batch[b"data"])

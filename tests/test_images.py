from __future__ import annotations

import io
import logging
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import timm
import torch
from conftest import SHARED_DATA, make_image, write_image_folder

from hfkit.data.images import EpochSampler, image_datasets, load_image_splits
from hfkit.data.transforms import decode_image
from hfkit.recipes import DataArgs


def _model(size: int = 32):
    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, size, size))
    return model


def _add_messy_files(root: Path) -> dict[str, Path]:
    ants, bees = root / "train" / "ants", root / "train" / "bees"
    files = {
        "gif": ants / "palette.gif",
        "huge": bees / "huge.jpg",
        "empty": ants / "empty.jpg",
        "truncated": bees / "truncated.jpg",
        "text": ants / "notes.jpg",
    }
    make_image((60, 40, 200)).convert("P", palette=PIL.Image.Palette.ADAPTIVE).save(
        files["gif"], transparency=0)
    make_image((230, 200, 40), size=(3000, 2000)).save(files["huge"], quality=90)
    files["empty"].write_bytes(b"")
    buf = io.BytesIO()
    make_image((230, 200, 40)).save(buf, format="JPEG")
    files["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["text"].write_text("this is not an image")
    return files


def test_messy_folder_skips_unreadable_files_and_keeps_labels(image_folder, caplog):
    files = _add_messy_files(image_folder)
    splits = load_image_splits(DataArgs(path=str(image_folder)), seed=0)
    assert splits.label_names == ["ants", "bees"]
    with caplog.at_level(logging.WARNING):
        train, evaluation = image_datasets(splits, _model(), DataArgs(), seed=0)
    skipped = set(train.skipped_sources)
    assert skipped == {str(files[k]) for k in ("empty", "truncated", "text")}
    for key in ("empty", "truncated", "text"):  # each reported once
        assert sum(str(files[key]) in r.getMessage() for r in caplog.records) == 1
    # 12 + 12 generated, + gif + huge readable
    assert len(train) == 26 and len(evaluation) == 12
    # every kept image has the label of its own folder: no shift past a skipped file
    for source, label in zip(train.sources, train.labels):
        assert Path(source).parent.name == splits.label_names[label]
    gif = train.image(train.sources.index(str(files["gif"])))
    assert gif.mode == "RGB"
    huge = train.image(train.sources.index(str(files["huge"])))
    assert min(huge.size) >= 64 and max(huge.size) < 3000  # decoded at a reduced scale
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y in (0, 1)


def test_transforms_come_from_the_model_config(image_folder):
    splits = load_image_splits(DataArgs(path=str(image_folder)), seed=0)
    model = _model(48)
    model.pretrained_cfg["mean"], model.pretrained_cfg["std"] = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    _, evaluation = image_datasets(splits, model, DataArgs(), seed=0)
    x, _ = evaluation[0]
    assert x.shape == (3, 48, 48)
    raw = np.asarray(evaluation.image(0).resize((48, 48)), dtype=np.float32) / 255
    # normalised with the model's own mean/std: (raw - 0.5) / 0.25, up to resize/crop detail
    assert abs(x.mean().item() - ((raw.mean().item() - 0.5) / 0.25)) < 0.15


def test_single_folder_gets_a_seeded_stratified_split(tmp_path):
    root = write_image_folder(tmp_path / "flat", {"all": 10}) / "all"
    args = DataArgs(path=str(root), val_fraction=0.2)
    a = load_image_splits(args, seed=1)
    b = load_image_splits(args, seed=1)
    c = load_image_splits(args, seed=2)
    assert len(a.train) == 16 and len(a.eval) == 4
    assert sorted(a.eval["label"]) == [0, 0, 1, 1]  # stratified
    def paths(s):
        return [e["path"] for e in s.eval.cast_column("image", datasets.Image(decode=False))["image"]]

    assert paths(a) == paths(b) and paths(a) != paths(c)


def test_max_samples_take_a_seeded_subset(image_folder):
    args = DataArgs(path=str(image_folder), max_train_samples=5, max_eval_samples=3)
    a, b = load_image_splits(args, 0), load_image_splits(args, 0)
    assert len(a.train) == 5 and len(a.eval) == 3
    assert list(a.train["label"]) == list(b.train["label"])


def test_zip_file_is_extracted_and_loaded(image_folder, tmp_path):
    import shutil

    archive = shutil.make_archive(str(tmp_path / "images_data"), "zip", image_folder.parent, "images")
    splits = load_image_splits(DataArgs(path=archive), seed=0)
    assert len(splits.train) == 24 and len(splits.eval) == 12


def test_missing_path_and_bad_split_are_clear_errors(image_folder):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_image_splits(DataArgs(path="./does/not/exist"), seed=0)
    with pytest.raises(ValueError, match="data.eval_split"):
        load_image_splits(DataArgs(path=str(image_folder), eval_split="nope"), seed=0)


def test_augmentation_is_seeded_per_epoch_and_sample(image_folder):
    splits = load_image_splits(DataArgs(path=str(image_folder)), seed=0)
    train, _ = image_datasets(splits, _model(), DataArgs(), seed=0)
    assert torch.equal(train[(0, 3)][0], train[(0, 3)][0])  # same epoch, same sample: same view
    assert not torch.equal(train[(0, 3)][0], train[(1, 3)][0])  # next epoch: a new view
    before = torch.random.get_rng_state()
    train[(0, 3)]
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched


def test_epoch_sampler_is_a_seeded_permutation():
    s = EpochSampler(10, seed=3, shuffle=True)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert sorted(i for _, i in first) == list(range(10))
    assert [i for _, i in first] != [i for _, i in second]
    assert all(e == 1 for e, _ in second)
    s.set_epoch(0)
    assert list(s) == first


def test_decode_image_reads_bytes_and_paths(tmp_path):
    img = make_image((10, 200, 10), size=(64, 48))
    img.save(tmp_path / "a.png")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert decode_image(buf.getvalue()).size == (64, 48)
    assert decode_image(str(tmp_path / "a.png")).mode == "RGB"


@pytest.mark.skipif(not (SHARED_DATA / "hymenoptera_data").is_dir(), reason="shared data absent")
def test_real_hymenoptera_layout():
    splits = load_image_splits(DataArgs(path=str(SHARED_DATA / "hymenoptera_data")), seed=0)
    assert splits.label_names == ["ants", "bees"]
    assert (len(splits.train), len(splits.eval)) == (245, 153)


def test_zip_url_is_downloaded_once_and_reused_offline(image_folder, tmp_path, monkeypatch):
    """A real HTTP download from a local server; the second load works with the server gone."""
    import functools
    import http.server
    import shutil
    import threading

    shutil.make_archive(str(tmp_path / "served" / "images_data"), "zip", image_folder.parent, "images")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/images_data.zip"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    try:
        first = load_image_splits(DataArgs(path=url), seed=0)
    finally:
        server.shutdown()
        server.server_close()
    assert (len(first.train), len(first.eval)) == (24, 12)
    assert str(tmp_path / "cache") in first.train.cast_column(
        "image", datasets.Image(decode=False))[0]["image"]["path"]
    again = load_image_splits(DataArgs(path=url), seed=0)  # server is down now
    assert (len(again.train), len(again.eval)) == (24, 12)


def test_unreachable_url_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConnectionError, match="data.path=/path/to/the/unpacked/folder"):
        load_image_splits(DataArgs(path="http://127.0.0.1:9/missing.zip"), seed=0)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10").is_dir(), reason="shared data absent")
def test_real_parquet_hub_layout():
    """A local snapshot in the Hub's parquet layout: image/label columns found by feature type."""
    args = DataArgs(path=str(SHARED_DATA / "cifar10"), max_train_samples=50, max_eval_samples=20)
    splits = load_image_splits(args, seed=0)
    assert (splits.image_column, splits.label_column) == ("img", "label")
    assert splits.label_names[0] == "airplane" and len(splits.label_names) == 10
    assert (len(splits.train), len(splits.eval)) == (50, 20)
    train, _ = image_datasets(splits, _model(), DataArgs(), seed=0)
    assert len(train) == 50 and train[0][0].shape == (3, 32, 32)



def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    """Mode I;16 (0..65535): scaled to 8 bits, not clipped to white by convert("RGB")."""
    from hfkit.data.tensor_images import decode_all

    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    path = tmp_path / "deep.png"
    PIL.Image.fromarray(gradient).save(path)
    assert PIL.Image.open(path).mode.startswith("I")
    rgb = np.asarray(decode_image(str(path)))
    assert rgb.shape == (8, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[0, :, 0], gradient[0] >> 8)
    ds = datasets.Dataset.from_dict({"image": [str(path)]}).cast_column("image", datasets.Image())
    assert torch.equal(decode_all(ds, "image")[0, 0], torch.from_numpy(rgb[..., 0].copy()))


# -- what a class-folder layout can get wrong --------------------------------------------------------

def _class_folders(root, layout: dict[str, list[str]]):
    from conftest import make_image

    for split, classes in layout.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3 if not name.startswith("empty") else 0):
                make_image((20 * i, 100, 200), seed=i).save(root / split / name / f"{i}.jpg")
    return root


@pytest.mark.parametrize("layout,message", [
    ({"train": ["ants", "bees", "empty-wasps"], "val": ["ants", "bees"]},
     r"class folder .*train/empty-wasps is empty: add its images, or remove the folder"),
    ({"train": ["ants", "bees"], "val": ["ants", "bees", "wasps"]},
     r"val has class folders that train/ lacks \(wasps\): no model can learn a class it never sees"),
    ({"train": ["ants"], "val": ["ants"]},
     r"train holds one class folder \('ants'\): classification needs a folder per class, two or more"),
])
def test_class_folder_mistakes_are_named(tmp_path, layout, message):
    from hfkit.data.images import load_image_splits
    from hfkit.recipes import DataArgs

    root = _class_folders(tmp_path / "data", layout)
    with pytest.raises(ValueError, match=message):
        load_image_splits(DataArgs(path=str(root)), seed=0)


def test_the_in_memory_path_skips_and_lists_unreadable_files(image_folder, tmp_path, monkeypatch):
    """A zero-byte, a text, a truncated and a bomb file among CIFAR-sized images: the in-memory path
    leaves them out and lists them, as the per-image path does, instead of aborting."""
    from conftest import make_image, tiny_image_overrides

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    bees = image_folder / "train" / "bees"
    (bees / "zero.jpg").write_bytes(b"")
    (bees / "notes.jpg").write_text("not an image")
    make_image((1, 2, 3), size=(32, 32)).save(tmp_path / "whole.jpg")
    (bees / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)  # a 100x100 image is then a "bomb"
    PIL.Image.new("RGB", (100, 100)).save(bees / "bomb.png")
    recipe = load_recipe("hymenoptera", tiny_image_overrides(image_folder) + [
        "train.epochs=1", "data.in_memory=true", "data.image_size=32"], output_dir=str(tmp_path / "run"))
    results = finetune(recipe)
    assert sorted(Path(p).name for p in results["skipped_files"]) == [
        "bomb.png", "notes.jpg", "truncated.jpg", "zero.jpg"]
    assert results["train_samples"] == 24

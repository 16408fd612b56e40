"""Nothing a user is handed executes: pickled weights, CIFAR batches, recipe YAML, the demo's files.

Every case builds a real payload whose unpickling (or construction) would create a marker file,
runs the real command on it, and checks the command refused it with a message and the marker is
absent.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import tarfile
from pathlib import Path

import datasets
import PIL.Image
import pytest
import torch
from conftest import write_chinese_qa_model, write_toy_cmrc

from hfkit.cli import main
from hfkit.data import archives


class Payload:
    """Unpickled, this runs ``touch marker`` (via os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "the payload ran"


def _poison(weights: Path, marker: Path) -> None:
    torch.save({"bert.embeddings.word_embeddings.weight": Payload(marker)}, weights)


@pytest.fixture
def evil_qa(tmp_path, marker) -> Path:
    """A QA model folder whose pytorch_model.bin holds the payload."""
    folder = write_chinese_qa_model(tmp_path / "evil-qa", weights="bin")
    _poison(folder / "pytorch_model.bin", marker)
    return folder


def _refused(capsys) -> str:
    err = capsys.readouterr().err
    assert "is not plain weights: loading it would run code (posix.system)" in err, err
    assert "Do not retry with weights_only=False" in err
    assert "will likely succeed" not in err and "Traceback" not in err  # torch's unsafe hint
    return err


def test_qa_refuses_a_pickle_that_runs_code(evil_qa, capsys):
    assert main(["qa", "--model", str(evil_qa), "--question", "谁是人工智能之父？",
                 "--context", "艾伦·图灵是人工智能之父。"]) == 2
    _refused(capsys)


def test_evaluate_refuses_a_pickle_that_runs_code(evil_qa, tmp_path, capsys):
    data = write_toy_cmrc(tmp_path / "cmrc", train=4, dev=4) / "toy_dev.json"
    assert main(["evaluate", "--model", str(evil_qa), "--data", str(data)]) == 2
    _refused(capsys)


def test_finetune_refuses_a_pickle_that_runs_code(evil_qa, tmp_path, capsys):
    data = write_toy_cmrc(tmp_path / "cmrc", train=8, dev=4)
    assert main(["finetune", "--recipe", "cmrc2018", "--output-dir", str(tmp_path / "run"),
                 "--set", f"data.path={data}", "--set", f"model.name={evil_qa}"]) == 2
    _refused(capsys)


def test_predict_refuses_a_pickled_text_classifier(tiny_bert_dir, tmp_path, marker, capsys):
    folder = tmp_path / "evil-bert"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    _poison(folder / "pytorch_model.bin", marker)
    assert main(["predict", "--model", str(folder), "a good film"]) == 2
    _refused(capsys)


def test_image_model_pretrained_file_that_runs_code_is_refused(image_folder, tmp_path, marker, capsys):
    from conftest import tiny_image_overrides

    weights = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": Payload(marker)}, weights)
    sets = [a for o in tiny_image_overrides(image_folder) + [f"model.pretrained={weights}"]
            for a in ("--set", o)]
    assert main(["finetune", "--recipe", "hymenoptera", "--output-dir", str(tmp_path / "run"), *sets]) == 2
    _refused(capsys)


def test_push_never_converts_a_pickle_that_runs_code(evil_qa, tmp_path, capsys):
    (evil_qa / "all_results.json").write_text(json.dumps({"eval_exact_match": 1.0}))
    assert main(["push", str(evil_qa), "--repo-id", "alice/qa", "--dry-run", str(tmp_path / "up")]) == 2
    assert "not a plain state dict" in capsys.readouterr().err
    assert not (tmp_path / "up" / "model.safetensors").exists()


# -- CIFAR batches -------------------------------------------------------------------------------

def test_a_crafted_cifar_batch_runs_nothing(tmp_path, marker, capsys):
    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = {b"labels": [0, 1], b"data": np.zeros((2, 3072), np.uint8)}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
        with open(folder / name, "wb") as f:
            pickle.dump(good if name != "batches.meta" else {b"label_names": [b"a", b"b"]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": [0], b"data": Payload(marker)}, f)
    assert main(["finetune", "--recipe", "cifar10", "--output-dir", str(tmp_path / "run"),
                 "--set", f"data.path={folder}"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"test_batch.*asks to run .*system.*was not loaded", err), err


# -- recipes -------------------------------------------------------------------------------------

def test_a_recipe_with_a_python_tag_runs_nothing(tmp_path, marker, capsys):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f'data:\n  path: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["finetune", "--recipe", str(recipe), "--output-dir", str(tmp_path / "run")]) == 2
    assert "evil.yaml: not valid YAML" in capsys.readouterr().err


def test_a_set_value_with_a_python_tag_stays_a_string(marker):
    from hfkit.recipes import load_recipe

    value = f'!!python/object/apply:os.system ["touch {marker}"]'
    assert load_recipe("hymenoptera", [f"data.path={value}"]).data.path == value


# -- the demo's file routes ----------------------------------------------------------------------

def test_the_demo_serves_no_file_outside_its_uploads(tiny_bert_dir, tmp_path):
    """gradio's file route is asked for /etc/passwd and for a file next to the model: refused."""
    import urllib.error
    import urllib.request

    from test_demos import _serve

    from hfkit import demo as demos

    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    blocks = demos.build_demo(str(tiny_bert_dir), "sentiment")
    try:
        url = _serve(blocks).rstrip("/")
        for path in ("/etc/passwd", str(secret), str(tiny_bert_dir / "config.json")):
            for route in ("/gradio_api/file=", "/file="):
                try:
                    with urllib.request.urlopen(url + route + path, timeout=30) as response:
                        body = response.read().decode(errors="replace")
                except urllib.error.HTTPError as e:
                    assert e.code in (403, 404), (route, path, e.code)
                    continue
                assert "root:" not in body and "do not serve" not in body and "vocab_size" not in body
    finally:
        blocks.close()


def _archive_overwriting(victim: Path, archive: Path, extract_root_depth: int) -> None:
    """A tar whose hard link passes datasets' check (judged from the link's folder) and, made
    from the extraction root as tarfile makes it, is the victim; its next member writes through it."""
    parts = victim.parent.resolve().relative_to("/").as_posix()
    assert len(parts.split("/")) >= extract_root_depth, "the victim must lie deeper than the cache"
    up = "../" * len(parts.split("/"))
    with tarfile.open(archive, "w") as tar:
        image = io.BytesIO()
        PIL.Image.new("RGB", (8, 8)).save(image, "PNG")
        for name in ("train/ants/a.png", "train/bees/b.png"):
            info = tarfile.TarInfo(name)
            info.size = image.getbuffer().nbytes
            tar.addfile(info, io.BytesIO(image.getvalue()))
        link = tarfile.TarInfo(f"{parts}/x")
        link.type, link.linkname = tarfile.LNKTYPE, f"{up}{parts}/{victim.name}"
        tar.addfile(link)
        payload = b"overwritten by the archive\n"
        info = tarfile.TarInfo(f"{parts}/x")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def test_an_archive_that_writes_outside_its_folder_is_refused(tmp_path, capsys):
    cache = Path(datasets.config.HF_DATASETS_CACHE).resolve() / archives.FOLDER / ("0" * 33)
    depth = len(cache.relative_to("/").parts)
    victim = tmp_path.joinpath(*["deep"] * depth) / "victim.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("original\n")
    archive = tmp_path / "data.tar"
    _archive_overwriting(victim, archive, depth)
    assert main(["finetune", "--recipe", "hymenoptera", "--set", f"data.path={archive}",
                 "--output-dir", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert f"{archive}: refused to unpack it: its member" in err and "outside" in err, err
    assert victim.read_text() == "original\n"

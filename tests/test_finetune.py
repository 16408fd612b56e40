"""finetune(): the checks around a run that keep a user's time and results safe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hfkit.finetune import finetune
from hfkit.recipes import load_recipe
from hfkit.training import checkpoints


def _run(overrides, out: Path, recipe: str = "hymenoptera", **kwargs):
    return finetune(load_recipe(recipe, overrides, output_dir=str(out)), **kwargs)


def test_an_output_dir_that_is_a_file_is_refused_before_data_loads(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    # the data path does not exist: had the data been loaded first, this would be FileNotFoundError
    with pytest.raises(FileExistsError, match="is a file"):
        _run([f"data.path={tmp_path / 'missing'}"], tmp_path / "results")


def test_texts_longer_than_the_model_are_cut_to_its_positions(tiny_bert_dir, tmp_path, capsys):
    """imdb asks for 256 tokens; the model has 128 positions: training and evaluation run on texts
    cut to 128 (before, the first long text crashed evaluation after a checkpoint was written)."""
    rows = [{"text": " ".join(["great" if i % 2 else "awful"] + ["the movie was very long"] * 60),
             "label": i % 2} for i in range(24)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    results = _run([f"data.path={data}", f"model.name={tiny_bert_dir}", "data.max_length=256",
                    "train.epochs=1", "train.batch_size=8", "train.mixed_precision=no"],
                   tmp_path / "run", recipe="imdb")
    assert results["global_step"] == 3 and "eval_accuracy" in results
    assert "data.max_length=256 is more than this model's 128 positions" in capsys.readouterr().out


@pytest.fixture
def small_disk(tmp_path):
    """A real 400 MB file system (tmpfs), to be filled up; needs the right to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path, leave_bytes: int = 1 << 20) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    size = filler.stat().st_size
    with open(filler, "r+b") as f:
        f.truncate(max(0, size - leave_bytes))
    return filler


def test_a_full_disk_says_free_space_and_resume(tiny_overrides, small_disk):
    out = small_disk / "run"
    overrides = tiny_overrides + ["train.keep_checkpoints=5"]
    _run(overrides, out, max_steps=2)
    filler = _fill(small_disk)
    with pytest.raises(RuntimeError, match="no space left on the disk.*free some space, then continue "
                                           "with --resume latest"):
        _run(overrides, out, resume="latest")
    assert [p.name for p in checkpoints(out)] == ["step-00000002"]
    assert not list(out.rglob(".tmp-*"))  # partial copies are removed, giving their space back
    filler.unlink()
    assert _run(overrides, out, resume="latest")["global_step"] == 12

"""finetune(): the checks around a run that keep a user's time and results safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfkit.finetune import finetune
from hfkit.recipes import load_recipe


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



"""The command line's own checks: arguments out of range, and inputs predict cannot read."""

from __future__ import annotations

import PIL.Image
import pytest
from conftest import make_image

from hfkit.cli import main


@pytest.mark.parametrize("argv,message", [
    (["predict", "--model", "m", "--top-k", "0", "a.jpg"], "--top-k: must be >= 1, got 0"),
    (["generate", "--model", "m", "--prompt", "p", "--temperature", "-1"], "--temperature: must be >= 0"),
    (["generate", "--model", "m", "--prompt", "p", "--top-p", "5"], "--top-p: must be in (0, 1], got 5"),
    (["generate", "--model", "m", "--prompt", "p", "--top-p", "0"], "--top-p: must be in (0, 1], got 0"),
    (["generate", "--model", "m", "--prompt", "p", "--max-new-tokens", "0"], "--max-new-tokens: must be"),
    (["generate", "--model", "m", "--prompt", "p", "--top-k", "x"], "--top-k: expected a number, got 'x'"),
    (["qa", "--model", "m", "--question", "q", "--context", "c", "--top-k", "-2"], "--top-k: must be >= 1"),
    (["finetune", "--recipe", "hymenoptera", "--max-steps", "0"], "--max-steps: must be >= 1"),
])
def test_out_of_range_arguments_are_refused_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    from conftest import tiny_image_overrides, write_image_folder

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("predict")
    data = write_image_folder(root / "images", {"train": 4, "val": 2})
    out = root / "run"
    finetune(load_recipe("hymenoptera", tiny_image_overrides(data) + ["train.epochs=1"], output_dir=str(out)))
    return out


def test_predict_goes_on_after_an_unreadable_file_and_a_bomb(image_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)  # a 100x100 image is then a "bomb"
    bomb, empty, good = tmp_path / "bomb.png", tmp_path / "empty.jpg", tmp_path / "good.jpg"
    PIL.Image.new("RGB", (100, 100)).save(bomb)
    empty.write_bytes(b"")
    make_image((230, 200, 40)).save(good)
    inputs = [str(bomb), str(empty), str(good)]
    assert main(["predict", "--model", str(image_model), "--top-k", "2", *inputs]) == 0
    captured = capsys.readouterr()
    assert f"{bomb}: cannot read image (DecompressionBombError" in captured.err
    assert f"{empty}: cannot read image" in captured.err
    assert captured.out.splitlines()[0] == str(good) and len(captured.out.splitlines()) == 3


def test_predict_fails_when_no_input_could_be_read(image_model, tmp_path, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert main(["predict", "--model", str(image_model), str(text)]) == 1
    assert "none of the 1 inputs could be read as an image" in capsys.readouterr().err

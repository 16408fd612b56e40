"""What the libraries print under hfkit's commands: no quick progress bars, the load report on one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from hfkit import console


@pytest.fixture
def quiet():
    console.quiet_libraries()
    yield
    from transformers.utils import logging as hf_logging

    console._quiet = False
    hf_logging.set_tqdm_hook(None)
    logger = logging.getLogger("transformers.modeling_utils")
    for f in [f for f in logger.filters if isinstance(f, console._OneLineLoadReport)]:
        logger.removeFilter(f)


def test_a_new_head_is_one_line_naming_its_weights(quiet, tmp_path, capfd):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    from hfkit.offline import loading_weights

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "base")
    capfd.readouterr()
    with loading_weights(str(tmp_path / "base")):
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=2)
    model.save_pretrained(tmp_path / "tuned")
    err = capfd.readouterr().err
    assert "BertForSequenceClassification: new weights, trained from scratch: classifier.weight, " \
           "classifier.bias" in err
    assert "LOAD REPORT" not in err and "\x1b[" not in err and "[3" not in err.replace("[transformers]", "")
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_hfkit_predict_prints_its_answer_only(tiny_bert_dir):
    """A whole command as a process: stderr holds no library bars or reports, stdout the answer."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "hfkit.cli", "predict", "--model", str(tiny_bert_dir),
                           "A wonderful film."], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
    assert done.stdout.splitlines()[0] == "A wonderful film." and "%" in done.stdout


def test_without_the_command_line_the_libraries_are_left_alone(tmp_path, capfd):
    """hfkit used as a library (a notebook) keeps transformers' own output."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    from hfkit.offline import loading_weights

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path / "base")
    capfd.readouterr()
    with loading_weights(str(tmp_path / "base")):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=2)
    assert "LOAD REPORT" in capfd.readouterr().err


def test_local_data_is_not_said_to_be_downloaded(tmp_path, capfd):
    from conftest import write_image_folder

    from hfkit.data.sources import load_splits

    data = write_image_folder(tmp_path / "images", {"train": 20, "val": 2})  # 40 files: datasets' bar
    capfd.readouterr()
    load_splits(str(data))
    err = capfd.readouterr().err
    assert "Downloading" not in err and "Reading local files" in err

"""What the libraries print under hfkit's commands: no quick progress bars, the load report on one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from hfkit import console


def _reset() -> None:
    """The libraries as a fresh process has them (an earlier test may have run the command line)."""
    from transformers.utils import logging as hf_logging

    console._quiet = False
    hf_logging.set_tqdm_hook(None)
    for name, kind in (("transformers.modeling_utils", console._OneLineLoadReport),
                       ("accelerate.utils.other", console._TiedWeightsNotice)):
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, kind)]:
            logger.removeFilter(f)


@pytest.fixture
def transformers_log():
    """What transformers logs during the test (its logger does not propagate, and its handler holds
    the stderr of whichever test imported it first)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    _reset()
    yield records
    logging.getLogger("transformers").removeHandler(handler)
    _reset()


def _load_base_into_a_classifier(folder):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

    from hfkit.offline import loading_weights

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertModel(config).save_pretrained(folder)
    with loading_weights(str(folder)):
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)


def test_a_new_head_is_one_line_naming_its_weights(transformers_log, tmp_path):
    console.quiet_libraries()
    _load_base_into_a_classifier(tmp_path / "base")
    (line,) = [r for r in transformers_log if "classifier" in r]
    assert line == ("BertForSequenceClassification: new weights, trained from scratch: classifier.bias, "
                    "classifier.weight")
    assert not any("LOAD REPORT" in r or "\x1b[" in r for r in transformers_log)


def test_the_quick_bars_are_off_and_the_others_stay(transformers_log):
    from transformers.utils import logging as hf_logging

    console.quiet_libraries()
    console.apply_if_quiet()
    for desc in console.QUIET_BARS:
        assert hf_logging.tqdm(range(3), desc=desc).disable
    assert not hf_logging.tqdm(range(3), desc="Downloading").disable


def test_hfkit_predict_prints_its_answer_only(tiny_bert_dir):
    """A whole command as a process: stderr holds no library bars or reports, stdout the answer."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "hfkit.cli", "predict", "--model", str(tiny_bert_dir),
                           "A wonderful film."], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
    assert done.stdout.splitlines()[0] == "A wonderful film." and "%" in done.stdout


def test_without_the_command_line_the_libraries_are_left_alone(transformers_log, tmp_path):
    """hfkit used as a library (a notebook) keeps transformers' own output."""
    _load_base_into_a_classifier(tmp_path / "base")
    assert any("LOAD REPORT" in r for r in transformers_log)


def test_local_data_is_not_said_to_be_downloaded(tmp_path, capfd):
    from conftest import write_image_folder

    from hfkit.data.sources import load_splits

    data = write_image_folder(tmp_path / "images", {"train": 20, "val": 2})  # 40 files: datasets' bar
    capfd.readouterr()
    load_splits(str(data))
    err = capfd.readouterr().err
    assert "Downloading" not in err and "Reading local files" in err


def test_accelerates_tied_weights_notice_is_dropped_and_other_warnings_stay(caplog):
    """accelerate's checkpoint code warns that it removed GPT-2's shared lm_head tensor (it says itself
    this should be OK, and resume ties it again); hfkit's command line drops that line only."""
    import torch
    from accelerate.utils.other import clean_state_dict_for_safetensors

    from hfkit.devices import process_state

    process_state()  # accelerate's logger needs its state, as in training
    shared = torch.zeros(4, 2)
    tied = {"transformer.wte.weight": shared, "lm_head.weight": shared}
    logger = logging.getLogger("accelerate.utils.other")
    _reset()  # as a fresh process has it (the command line's tests installed the filter)
    with caplog.at_level(logging.WARNING, logger="accelerate.utils.other"):
        clean_state_dict_for_safetensors(dict(tied))
        assert any("Removed shared tensor" in r.getMessage() for r in caplog.records)  # the library's own
        caplog.clear()
        console.quiet_libraries()
        try:
            assert clean_state_dict_for_safetensors(dict(tied)).keys() == {"transformer.wte.weight"}
            logger.warning("something else")
            assert [r.getMessage() for r in caplog.records] == ["something else"]
        finally:
            _reset()

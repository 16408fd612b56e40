"""timm models: fresh heads, saving and loading result folders, local weights, trainable parts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from hfkit.models import (
    create_image_model,
    label_names,
    load_image_model,
    save_image_model,
    set_trainable,
)
from hfkit.recipes import ModelArgs, RecipeError

LABELS = ["ant", "bee", "wasp"]


@pytest.fixture(autouse=True)
def _small_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(labels=LABELS, **kwargs):
    torch.manual_seed(0)
    return create_image_model(ModelArgs(name="resnet18", pretrained=False), labels, **kwargs)


def _image(seed=1):
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _outputs(model, x):
    return model.eval()(x)


def test_create_sets_head_and_labels():
    model = _model(image_size=64)
    assert model.num_classes == len(LABELS)
    assert model.get_classifier().out_features == len(LABELS)
    assert model.pretrained_cfg["label_names"] == LABELS
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)
    assert _outputs(model, _image()).shape == (2, len(LABELS))
    assert label_names(model) == LABELS


def test_create_keeps_model_input_size_without_image_size():
    model = _model()
    assert model.pretrained_cfg["input_size"] == timm.create_model("resnet18").pretrained_cfg["input_size"]


def test_label_names_fallback():
    model = timm.create_model("resnet18", num_classes=2)
    assert label_names(model) == ["0", "1"]


def test_save_and_load_round_trip(tmp_path):
    model = _model(image_size=64).eval()
    folder = tmp_path / "result"
    save_image_model(model, folder)
    files = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith(".bin")]

    x = _image()
    expected = _outputs(model, x)
    via_timm = timm.create_model(f"local-dir:{folder}", pretrained=True)
    via_hfkit = load_image_model(str(folder))
    assert not via_hfkit.training
    for loaded in (via_timm, via_hfkit):
        assert loaded.num_classes == len(LABELS)
        torch.testing.assert_close(_outputs(loaded, x), expected, rtol=0, atol=1e-6)
        assert label_names(loaded) == LABELS
    assert via_hfkit.pretrained_cfg["input_size"][-1] == 64


def test_save_channels_last_model(tmp_path):
    model = _model().to(memory_format=torch.channels_last).eval()
    assert not model.conv1.weight.is_contiguous()
    save_image_model(model, tmp_path / "cl")
    # the training model keeps its memory format
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    saved = load_file(tmp_path / "cl" / "model.safetensors")
    torch.testing.assert_close(saved["conv1.weight"], model.conv1.weight.detach(), rtol=0, atol=0)
    loaded = load_image_model(str(tmp_path / "cl"))
    x = _image()
    torch.testing.assert_close(_outputs(loaded, x), _outputs(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source_classes", [1000, 10])
def test_pretrained_from_weights_file(tmp_path, source_classes):
    torch.manual_seed(123)
    source = timm.create_model("resnet18", num_classes=source_classes)
    file = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))

    model = create_image_model(ModelArgs(name="resnet18", pretrained=str(file)), LABELS)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.get_classifier().out_features == len(LABELS)
    assert model.pretrained_cfg["label_names"] == LABELS


def test_pretrained_from_folder_without_config(tmp_path):
    torch.manual_seed(7)
    source = timm.create_model("resnet18", num_classes=10)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = create_image_model(ModelArgs(name="resnet18", pretrained=str(tmp_path)), LABELS)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.get_classifier().out_features == len(LABELS)


def test_pretrained_from_saved_folder(tmp_path):
    source = _model(["a", "b", "c", "d", "e"])
    save_image_model(source, tmp_path / "prev")
    model = create_image_model(ModelArgs(name="resnet18", pretrained=str(tmp_path / "prev")), LABELS)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.get_classifier().out_features == len(LABELS)
    assert label_names(model) == LABELS


def test_missing_pretrained_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(RecipeError, match="model.pretrained") as info:
        create_image_model(ModelArgs(name="resnet18", pretrained=str(missing)), LABELS)
    assert str(missing) in str(info.value)


def test_pretrained_folder_without_weights(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(RecipeError, match="model.pretrained"):
        create_image_model(ModelArgs(name="resnet18", pretrained=str(tmp_path)), LABELS)


def test_pretrained_true_offline_without_cache_fails_fast(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "TORCH_HOME"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               OMP_NUM_THREADS="1")
    code = textwrap.dedent("""
        from hfkit.models import create_image_model
        from hfkit.recipes import ModelArgs
        try:
            create_image_model(ModelArgs(name="resnet18", pretrained=True), ["a", "b"])
        except RuntimeError as e:
            print("RUNTIMEERROR:", e)
        else:
            print("LOADED")
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "RUNTIMEERROR:" in out, out + result.stderr
    assert "hfkit download" in out
    assert "model.pretrained=false" in out


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_set_trainable():
    model = _model()
    everything = {n for n, _ in model.named_parameters()}
    head = {"fc.weight", "fc.bias"}

    set_trainable(model, "linear-probe", epoch=0, unfreeze_after=1)
    assert _trainable(model) == head

    set_trainable(model, "full", epoch=0, unfreeze_after=1)
    assert _trainable(model) == everything

    set_trainable(model, "freeze-then-unfreeze", epoch=0, unfreeze_after=1)
    assert _trainable(model) == head
    set_trainable(model, "freeze-then-unfreeze", epoch=1, unfreeze_after=1)
    assert _trainable(model) == everything


def test_text_model_from_local_folder_with_labels_and_attention_dropout(tiny_bert_dir):
    from hfkit.text_models import create_text_model

    args = ModelArgs(name=str(tiny_bert_dir), attention_dropout=0.0)
    model, tokenizer = create_text_model(args, "text-classification", ["neg", "pos", "mixed"])
    assert model.config.attention_probs_dropout_prob == 0.0
    assert model.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert model.classifier.out_features == 3
    assert tokenizer("great film")["input_ids"][0] == tokenizer.cls_token_id
    random_args = ModelArgs(name=str(tiny_bert_dir), pretrained=False)
    fresh, _ = create_text_model(random_args, "text-classification", ["neg", "pos"])
    assert fresh.config.attention_probs_dropout_prob == 0.1  # the model's own when left unset


def test_text_model_missing_offline_says_how_to_download(tmp_path, monkeypatch):
    from hfkit.text_models import create_text_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="hfkit download nobody/no-such-model"):
        create_text_model(ModelArgs(name="nobody/no-such-model"), "text-classification", ["a", "b"])


def test_resnet18_cifar_stem_is_initialised_like_the_other_convolutions():
    """timm's ResNet init (Kaiming normal, fan out) for the replaced 3x3 stem too, not PyTorch's
    default (Kaiming uniform with a=sqrt(5): std 0.11 here instead of 0.059)."""
    torch.manual_seed(0)
    conv1 = timm.create_model("resnet18_cifar", num_classes=10).conv1.weight
    expected = math.sqrt(2 / (64 * 3 * 3))  # gain sqrt(2) over fan_out = out channels x kernel area
    assert abs(conv1.std().item() - expected) < 0.1 * expected


@pytest.mark.parametrize("argv,repo,option", [
    (["generate", "--model", "openai-community/gpt2", "--prompt", "Once"], "openai-community/gpt2",
     "--model ./models/gpt2"),
    (["predict", "--model", "someone/missing", "a text"], "someone/missing", "--model ./models/missing"),
    (["finetune", "--recipe", "imdb", "--set", "data.path=DATA"], "google-bert/bert-base-uncased",
     "--set model.name=./models/bert-base-uncased"),
])
def test_every_command_offline_without_the_model_says_how_to_download(argv, repo, option, tmp_path,
                                                                       monkeypatch, capsys):
    """An empty cache, no network: one message with the `hfkit download` recipe, no traceback (the
    imdb recipe's attention_dropout override reads the model's config first: that read too)."""
    from hfkit.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(f'{{"text": "film {i}", "label": {i % 2}}}' for i in range(20)))
    argv = [a.replace("DATA", str(data)) for a in argv] + (
        ["--output-dir", str(tmp_path / "run")] if argv[0] == "finetune" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"hfkit download {repo} --to" in err and option in err and "Traceback" not in err


def test_position_limit_is_the_tokenizers_where_it_knows_it(tiny_bert_dir):
    """A RoBERTa has two positions more than it reads (its padding offset); its tokenizer says so.
    The limit hfkit takes is one a real forward pass accepts, and the one past it crashes."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    from hfkit.text_models import clamp_max_length, position_limit

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir, model_max_length=30)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                           pad_token_id=1)
    model = RobertaForSequenceClassification(config).eval()
    limit = position_limit(config, tokenizer)
    assert limit == 30
    model(input_ids=torch.full((1, limit), 5))  # the longest input it takes runs
    with pytest.raises((IndexError, RuntimeError)):  # out of the position (or type) embeddings
        model(input_ids=torch.full((1, limit + 1), 5))
    assert clamp_max_length(64, 512, config, tokenizer)[0] == 30
    # a tokenizer without a limit (transformers' huge placeholder): the position embeddings decide
    unlimited = AutoTokenizer.from_pretrained(tiny_bert_dir, model_max_length=int(1e30))
    assert position_limit(config, unlimited) == 32

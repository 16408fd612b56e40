"""hfkit.hub.download: which files it picks, and fetching through a local fake Hub (no network)."""
# ruff: noqa: F811  (pytest hands the imported fake_hub fixture to tests by that argument name)

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fakehub import (
    FakeHub,
    fake_hub,  # noqa: F401
    set_offline,
    use_hub,
)

from hfkit.hub import download, select_files

# ---------------------------------------------------------------------------------------------
# select_files on real repos' listings

JUNK = ["tf_model.h5", "flax_model.msgpack", "rust_model.ot", "onnx/model.onnx", "onnx/config.json",
        "coreml/text-generation/float32_model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
        "openvino/openvino_model.xml", "openvino/openvino_model.bin", "training_args.bin", "64-8bits.tflite"]


def test_select_files_single_bin_repo():
    """uer/roberta-base-chinese-extractive-qa: only a pickle, fetched with its BERT vocabulary."""
    files = [".gitattributes", "README.md", "config.json", "pytorch_model.bin", "special_tokens_map.json",
             "tokenizer_config.json", "vocab.txt"]
    assert select_files(files, "model") == sorted(files[1:])


def test_select_files_takes_safetensors_and_no_other_format():
    files = [".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
             "model.fp16.safetensors", "pytorch_model.bin", "merges.txt", "vocab.json", "tokenizer.json",
             "tokenizer_config.json", *JUNK]
    assert select_files(files, "model") == ["README.md", "config.json", "generation_config.json",
                                            "merges.txt", "model.safetensors", "tokenizer.json",
                                            "tokenizer_config.json", "vocab.json"]


def test_select_files_sharded_safetensors_with_index():
    """A Llama-style repo: shards + index at the top, the original checkpoint in original/."""
    shards = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    bin_shards = [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)]
    files = [".gitattributes", "LICENSE", "README.md", "USE_POLICY.md", "config.json",
             "generation_config.json", *shards, "model.safetensors.index.json", *bin_shards,
             "pytorch_model.bin.index.json",
             "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model",
             "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "consolidated.safetensors"]
    assert select_files(files, "model") == sorted(
        ["README.md", "config.json", "generation_config.json", *shards, "model.safetensors.index.json",
         "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"])


def test_select_files_sharded_bin_with_index():
    shards = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    files = [".gitattributes", "config.json", *shards, "pytorch_model.bin.index.json", "tf_model.h5"]
    assert select_files(files, "model") == sorted(["config.json", *shards, "pytorch_model.bin.index.json"])


def test_select_files_timm_repo():
    """timm/resnet18.a1_in1k: config.json with "architecture", weights twice."""
    files = [".gitattributes", "README.md", "config.json", "model.safetensors", "pytorch_model.bin"]
    assert select_files(files, "model") == ["README.md", "config.json", "model.safetensors"]


def test_select_files_keeps_sentencepiece():
    """google-t5/t5-small: spiece.model is the tokenizer."""
    files = [".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
             "pytorch_model.bin", "spiece.model", "tokenizer.json", *JUNK]
    assert select_files(files, "model") == ["README.md", "config.json", "generation_config.json",
                                            "model.safetensors", "spiece.model", "tokenizer.json"]


def test_select_files_model_without_usable_weights():
    assert select_files([".gitattributes", "README.md", "config.json", "tf_model.h5",
                         "model.safetensors.index.json"], "model") == []


def test_select_files_dataset_takes_everything_but_gitattributes():
    files = [".gitattributes", "README.md", "plain_text/train-00000-of-00001.parquet",
             "plain_text/test-00000-of-00001.parquet", "data/.gitattributes"]
    assert select_files(files, "dataset") == sorted(files[1:4])


# ---------------------------------------------------------------------------------------------
# Through the fake Hub

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
         *"the a who what where is was in on at of and to".split(),
         *"beijing paris capital city river lives lived born france china".split(),
         *(f"word{i}" for i in range(70))]
JUNK_BYTES = {"tf_model.h5": b"HDF5 junk", "flax_model.msgpack": b"flax junk",
              "onnx/model.onnx": b"onnx junk", "training_args.bin": b"pickle junk",
              "pytorch_model.bin": b"a second copy, never wanted"}


@pytest.fixture(scope="module")
def tiny_qa_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT for extractive QA with a WordPiece vocab.txt, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-qa")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForQuestionAnswering(config).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def files_in(folder: Path) -> dict[str, bytes]:
    """The files of a folder by their repo path, without the download metadata in .cache/."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def fetched(hub: FakeHub) -> set[str]:
    """The repo files the client asked for with GET."""
    return {path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path in hub.requests
            if method == "GET" and "/resolve/" in path}


def qa_outputs(folder: Path):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    inputs = tokenizer("who lives in paris", "the river lives in the capital city of france",
                       return_tensors="pt")
    out = model(**inputs)
    return inputs["input_ids"], out.start_logits, out.end_logits


def test_download_model_fetches_only_what_loading_needs(fake_hub, tiny_qa_dir, tmp_path, monkeypatch):
    import torch

    saved = files_in(tiny_qa_dir)
    fake_hub.add_repo("hfkit/tiny-qa", {**saved, **JUNK_BYTES, "README.md": b"# tiny QA\n",
                                        ".gitattributes": b"*.bin filter=lfs\n"})

    to = tmp_path / "weights" / "tiny-qa"
    assert download("hfkit/tiny-qa", to) == to

    wanted = {"README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "vocab.txt"}
    assert set(saved) <= wanted
    assert set(files_in(to)) == wanted and fetched(fake_hub) == wanted
    assert all(files_in(to)[name] == content for name, content in saved.items())

    set_offline(monkeypatch, True)  # what runs afterwards does so without the Hub
    for got, expected in zip(qa_outputs(to), qa_outputs(tiny_qa_dir)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_download_again_fetches_only_what_changed(fake_hub, tmp_path):
    fake_hub.add_repo("hfkit/m", {"config.json": b"{}", "model.safetensors": b"weights", "README.md": b"v1"})
    to = tmp_path / "m"
    download("hfkit/m", to)
    fake_hub.commit("hfkit/m", {"README.md": b"v2"})
    fake_hub.requests.clear()
    download("hfkit/m", to)
    assert fetched(fake_hub) == {"README.md"}
    assert files_in(to) == {"config.json": b"{}", "model.safetensors": b"weights", "README.md": b"v2"}


def test_download_dataset_takes_everything(fake_hub, tmp_path):
    files = {".gitattributes": b"*.parquet filter=lfs\n", "README.md": b"---\nlicense: mit\n---\n",
             "data/train.csv": b"text,label\ngreat,1\nawful,0\n", "data/test.csv": b"text,label\nfine,1\n",
             "data/[weird] name*.json": b"{}"}
    fake_hub.add_repo("hfkit/reviews", files, repo_type="dataset")
    to = download("hfkit/reviews", tmp_path / "reviews", repo_type="dataset")
    assert files_in(to) == {k: v for k, v in files.items() if k != ".gitattributes"}


def test_download_include_replaces_the_choice(fake_hub, tmp_path):
    fake_hub.add_repo("hfkit/reviews", {"data/train.csv": b"a", "data/test.csv": b"b"}, repo_type="dataset")
    fake_hub.add_repo("hfkit/m", {"config.json": b"{}", "model.safetensors": b"w", "onnx/model.onnx": b"o"})
    assert files_in(download("hfkit/reviews", tmp_path / "d", repo_type="dataset",
                             include=["data/train*"])) == {"data/train.csv": b"a"}
    assert files_in(download("hfkit/m", tmp_path / "m", include=["onnx/*", "config.json"])) == {
        "config.json": b"{}", "onnx/model.onnx": b"o"}
    with pytest.raises(FileNotFoundError, match=r"no file of hfkit/m matches include=\['\*.gguf'\]"):
        download("hfkit/m", tmp_path / "x", include=["*.gguf"])


def test_download_revision(fake_hub, tmp_path):
    first = fake_hub.add_repo("hfkit/m", {"config.json": b"{}", "model.safetensors": b"v1"})
    fake_hub.commit("hfkit/m", {"model.safetensors": b"v2"})
    assert files_in(download("hfkit/m", tmp_path / "old", revision=first))["model.safetensors"] == b"v1"
    assert files_in(download("hfkit/m", tmp_path / "new"))["model.safetensors"] == b"v2"
    with pytest.raises(ConnectionError, match="no revision 'v9'"):
        download("hfkit/m", tmp_path / "v9", revision="v9")


def test_download_model_without_weights(fake_hub, tmp_path):
    fake_hub.add_repo("hfkit/tf-only", {"config.json": b"{}", "tf_model.h5": b"h5", "README.md": b"#"})
    with pytest.raises(FileNotFoundError, match="no weights hfkit can load") as e:
        download("hfkit/tf-only", tmp_path / "tf")
    assert "README.md, config.json, tf_model.h5" in str(e.value) and "include" in str(e.value)
    assert not (tmp_path / "tf").exists()


def test_download_missing_repo(fake_hub, tmp_path):
    fake_hub.add_repo("hfkit/reviews", {"data.csv": b"a"}, repo_type="dataset")
    with pytest.raises(ConnectionError) as e:
        download("hfkit/reviews", tmp_path / "r")  # a dataset asked for as a model
    assert type(e.value) is ConnectionError
    assert "model repo hfkit/reviews was not found" in str(e.value) and "is it a dataset?" in str(e.value)
    assert "hf auth login" in str(e.value)


def test_download_gated_repo(fake_hub, tmp_path):
    fake_hub.add_repo("meta/gated", {"config.json": b"{}", "model.safetensors": b"w"}, gated=True)
    with pytest.raises(ConnectionError, match=f"gated: accept its conditions at {fake_hub.url}/meta/gated"):
        download("meta/gated", tmp_path / "g")


def test_download_offline_mode_says_so(fake_hub, tmp_path, monkeypatch):
    fake_hub.add_repo("hfkit/m", {"config.json": b"{}", "model.safetensors": b"w"})
    set_offline(monkeypatch, True)
    with pytest.raises(ConnectionError, match="offline mode is on") as e:
        download("hfkit/m", tmp_path / "m")
    assert "unset HF_HUB_OFFLINE" in str(e.value) and "--to ./models/m" in str(e.value)
    assert fake_hub.requests == []


def test_download_without_network_fails_at_once(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    use_hub(monkeypatch, dead, tmp_path / "hf-home")
    with pytest.raises(ConnectionError, match=f"cannot reach the Hugging Face Hub at {dead}") as e:
        download("hfkit/m", tmp_path / "m", repo_type="dataset")
    assert "hfkit download hfkit/m --repo-type dataset" in str(e.value)


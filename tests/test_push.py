"""hfkit push: what goes up, the model card, and loading it back, through a local fake Hub (no network)."""
# ruff: noqa: F811  (pytest hands the imported fake_hub fixture to tests by that argument name)

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_overrides, write_image_folder
from fakehub import (
    FakeHub,
    fake_hub,  # noqa: F401
    readme_metadata_errors,
    set_offline,
)

from hfkit.cards import GENERATED_MARK, model_card
from hfkit.hub import download, push
from hfkit.recipes import load_recipe, save_recipe

TOKEN = "hf_fakeTokenForTests123"
TIMM_FILES = {"model.safetensors", "config.json", "recipe.yaml", "all_results.json", "training_curves.png",
              "confusion_matrix.png", "predictions.png", "README.md"}
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory) -> Path:
    """A real result folder of the hymenoptera recipe (seconds on CPU), checkpoints included."""
    from hfkit.finetune import finetune

    root = tmp_path_factory.mktemp("timm-run")
    data = write_image_folder(root / "images", {"train": 12, "val": 6})
    finetune(load_recipe("hymenoptera", tiny_image_overrides(data), output_dir=str(root / "run")))
    return root / "run"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """A transformers result folder as `hfkit finetune --recipe imdb` leaves it, built by hand, with the
    leftovers a push must not take: checkpoints, logs, a pickle copy, evaluation output, hidden files."""
    from PIL import Image
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("imdb-run")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    save_recipe(load_recipe("imdb", ["train.epochs=3", "train.batch_size=16"], output_dir=str(out)),
                out / "recipe.yaml")
    results = {"epoch": 3, "global_step": 30, "eval_loss": 0.3125, "eval_accuracy": 0.9, "eval_f1": 0.8875,
               "eval_per_class_accuracy": {"neg": 0.92, "pos": 0.88}, "best_epoch": 3, "train_runtime": 12.5,
               "train_samples_per_second": 38.4, "train_samples": 160, "eval_samples": 60,
               "total_runtime": 15.0, "interrupted": False}
    (out / "all_results.json").write_text(json.dumps(results, indent=2))
    for name in ("training_curves.png", "confusion_matrix.png"):
        Image.new("RGB", (8, 8), "white").save(out / name)
    (out / "checkpoints" / "step-00000030").mkdir(parents=True)
    (out / "checkpoints" / "step-00000030" / "optimizer.bin").write_bytes(b"pickle")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"log")
    (out / "eval-dev").mkdir()
    (out / "eval-dev" / "eval_results.json").write_text("{}")
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    (out / "training_args.pt").write_bytes(b"pickle")
    (out / ".DS_Store").write_bytes(b"junk")
    (out / "predictions.json").write_text("{}")
    return out


@pytest.fixture
def token(monkeypatch) -> str:
    """A fake token in HF_TOKEN (set after fake_hub, which clears it)."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return TOKEN


def repo_files(hub: FakeHub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    repo = hub.repo(repo_id)
    return dict(repo.commits[repo.resolve(revision)])


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def card_data(readme: bytes) -> dict:
    from huggingface_hub import ModelCard

    return ModelCard(readme.decode()).data.to_dict()


def model_index_values(data: dict) -> dict[str, float]:
    (entry,) = data["model-index"]
    return {m["type"]: m["value"] for result in entry["results"] for m in result["metrics"]}


def image_model_outputs(source: str) -> torch.Tensor:
    import timm

    model = timm.create_model(source, pretrained=True).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32))


def text_model_outputs(source) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    with torch.no_grad():
        return model(**tokenizer(["the film was wonderful", "a dreadful plot"], padding=True,
                                 return_tensors="pt")).logits


def commits(hub: FakeHub) -> list[tuple[str, str]]:
    return [r for r in hub.requests if r[0] == "POST" and "/commit/" in r[1]]


# ---------------------------------------------------------------------------------------------
# timm


def test_push_timm_run_uploads_the_result_and_loads_back(fake_hub, timm_run, token, monkeypatch):
    url = push(timm_run, "alice/resnet18-ants-bees")
    repo = fake_hub.repo("alice/resnet18-ants-bees")
    assert url == f"{fake_hub.url}/alice/resnet18-ants-bees/commit/{repo.branches['main']}"
    files = repo_files(fake_hub, "alice/resnet18-ants-bees")
    assert set(files) == TIMM_FILES | {".gitattributes"}  # no checkpoints/, no pickles
    for name in TIMM_FILES - {"README.md"}:
        assert files[name] == (timm_run / name).read_bytes(), name
    assert not any(TOKEN.encode() in content for content in files.values())
    # the token came from the environment, in the Authorization header only
    assert f"Bearer {TOKEN}" in fake_hub.authorizations
    assert repo.messages[repo.branches["main"]] == "Upload run with hfkit push"

    # the card: checked by the (fake) Hub's YAML validation on the way, metadata equal to the results
    assert fake_hub.validated == [files["README.md"].decode()]
    data = card_data(files["README.md"])
    results = json.loads((timm_run / "all_results.json").read_text())
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0"
    assert "base_model" not in data and "datasets" not in data  # random init, local images
    assert model_index_values(data) == {"accuracy": results["eval_accuracy"], "f1": results["eval_f1"],
                                        "loss": results["eval_loss"]}
    readme = files["README.md"].decode()
    assert 'timm.create_model("hf-hub:alice/resnet18-ants-bees", pretrained=True)' in readme
    assert "hfkit download alice/resnet18-ants-bees --to ./models/resnet18-ants-bees" in readme
    assert "HF_HUB_OFFLINE=1" in readme and "![" in readme and "(training_curves.png)" in readme
    assert str(timm_run.parent) not in readme  # no local paths in the card

    # what was pushed gives the same outputs as the local folder
    local = image_model_outputs(f"local-dir:{timm_run}")
    torch.testing.assert_close(image_model_outputs("hf-hub:alice/resnet18-ants-bees"), local, rtol=0, atol=0)
    import timm

    hub_model = timm.create_model("hf-hub:alice/resnet18-ants-bees", pretrained=True)
    assert hub_model.pretrained_cfg["label_names"] == ["ants", "bees"]
    assert hub_model.pretrained_cfg["input_size"] == (3, 32, 32)

    # offline, from a downloaded copy, as the card says
    folder = download("alice/resnet18-ants-bees", Path(timm_run).parent / "downloaded")
    set_offline(monkeypatch, True)
    torch.testing.assert_close(image_model_outputs(f"local-dir:{folder}"), local, rtol=0, atol=0)


def test_dry_run_writes_exactly_what_a_push_uploads(fake_hub, timm_run, token, tmp_path, monkeypatch):
    set_offline(monkeypatch, True)  # a dry run needs no network and contacts no server
    dry = tmp_path / "dry"
    assert push(timm_run, "alice/ants", dry_run=dry) == str(dry)
    assert fake_hub.requests == []
    assert set(files_in(dry)) == TIMM_FILES
    assert files_in(dry)["README.md"].decode().count(GENERATED_MARK) == 1
    assert push(timm_run, "alice/ants", dry_run=dry) == str(dry)  # an earlier dry run is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        push(timm_run, "alice/ants", dry_run=tmp_path / "other")

    set_offline(monkeypatch, False)
    push(timm_run, "alice/ants")
    uploaded = repo_files(fake_hub, "alice/ants")
    uploaded.pop(".gitattributes")
    assert uploaded == files_in(dry)  # the same names, byte for byte, card included


@pytest.fixture
def no_backoff(monkeypatch):
    """The client's retries without their waits (1, 2, 4, 8, 8 s)."""
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)


def test_failed_upload_says_what_to_do_and_can_be_run_again(fake_hub, timm_run, token, no_backoff):
    commit = r"/api/models/alice/ants/commit/"
    fake_hub.fail_next("POST", commit, 500)  # one server error: the client retries it by itself
    push(timm_run, "alice/ants")
    assert len(commits(fake_hub)) == 2 and set(repo_files(fake_hub, "alice/ants")) == TIMM_FILES | {
        ".gitattributes"}

    fake_hub.add_repo("alice/ants", {})  # empty again
    fake_hub.fail_next("POST", commit, 500, times=6)  # more than the client's 5 retries
    with pytest.raises(ConnectionError) as e:
        push(timm_run, "alice/ants")
    message = str(e.value)
    assert "the push to alice/ants failed" in message and "500" in message
    assert "run the same command again" in message and TOKEN not in message
    assert repo_files(fake_hub, "alice/ants") == {}  # nothing committed

    url = push(timm_run, "alice/ants")  # the same call again
    assert "/alice/ants/commit/" in url
    assert set(repo_files(fake_hub, "alice/ants")) == TIMM_FILES


def test_revision_and_create_pr_reach_the_hub(fake_hub, timm_run, token, tmp_path):
    push(timm_run, "alice/ants", revision="experiment")
    assert ("POST", "/api/models/alice/ants/branch/experiment") in fake_hub.requests
    assert set(repo_files(fake_hub, "alice/ants", "experiment")) == TIMM_FILES | {".gitattributes"}
    assert set(repo_files(fake_hub, "alice/ants")) == {".gitattributes"}  # main untouched

    url = push(timm_run, "alice/ants", create_pr=True, commit_message="Add the ants model")
    repo = fake_hub.repo("alice/ants")
    assert url == f"{fake_hub.url}/alice/ants/discussions/1" and repo.pulls == {1: "main"}
    assert set(repo_files(fake_hub, "alice/ants", "refs/pr/1")) == TIMM_FILES | {".gitattributes"}
    assert repo.messages[repo.branches["refs/pr/1"]] == "Add the ants model"
    assert set(repo_files(fake_hub, "alice/ants")) == {".gitattributes"}

    run = tmp_path / "run"  # one more file, added to the open pull request
    shutil.copytree(timm_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "labels.txt").write_text("ants\nbees\n")
    push(run, "alice/ants", revision="refs/pr/1", commit_message="Add labels.txt")
    assert repo.messages[repo.branches["refs/pr/1"]] == "Add labels.txt" and len(repo.pulls) == 1
    assert "labels.txt" in repo_files(fake_hub, "alice/ants", "refs/pr/1")
    fake_hub.requests.clear()
    with pytest.raises(ValueError, match="takes no --revision"):
        push(timm_run, "alice/ants", revision="v2", create_pr=True)
    assert fake_hub.requests == []


def test_private_reaches_create_repo(fake_hub, timm_run, token):
    push(timm_run, "alice/secret-ants", private=True)
    assert fake_hub.repo("alice/secret-ants").private
    push(timm_run, "alice/public-ants")
    assert not fake_hub.repo("alice/public-ants").private
    fake_hub.requests.clear()
    with pytest.raises(ValueError, match="already exists and is public"):
        push(timm_run, "alice/public-ants", private=True)
    assert commits(fake_hub) == []


def test_a_token_in_any_file_stops_the_push(fake_hub, timm_run, token, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(timm_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = (run / "recipe.yaml").read_text().replace("description: ", f"description: my token {TOKEN} ")
    (run / "recipe.yaml").write_text(recipe)
    for dry_run in (tmp_path / "dry", None):
        with pytest.raises(ValueError, match="recipe.yaml holds your Hugging Face token") as e:
            push(run, "alice/ants", dry_run=dry_run)
        assert TOKEN not in str(e.value) and "nothing was uploaded" in str(e.value)
    assert fake_hub.repo("alice/ants") is None and fake_hub.requests == []
    with pytest.raises(ValueError, match="--commit-message holds your Hugging Face token"):
        push(timm_run, "alice/ants", commit_message=f"token {TOKEN}")


def test_without_token_or_network_nothing_is_sent(fake_hub, timm_run, monkeypatch):
    with pytest.raises(ConnectionError, match="no Hugging Face token") as e:
        push(timm_run, "alice/ants")
    assert "hf auth login" in str(e.value) and "HF_TOKEN" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    set_offline(monkeypatch, True)
    with pytest.raises(ConnectionError, match="offline mode is on") as e:
        push(timm_run, "alice/ants")
    assert "unset HF_HUB_OFFLINE" in str(e.value) and "--dry-run" in str(e.value)
    assert fake_hub.requests == []


def test_refuses_what_it_cannot_push(fake_hub, token, tmp_path):
    with pytest.raises(ValueError, match="needs its owner"):
        push(tmp_path, "ants")
    with pytest.raises(FileNotFoundError, match="no result folder"):
        push(tmp_path / "missing", "alice/ants")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push(tmp_path, "alice/ants")
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "config.json").write_text('{"architecture": "resnet18"}')
    (tmp_path / "model.pth").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"only as pickles \(model.pth\).*safetensors"):
        push(tmp_path, "alice/ants")
    assert fake_hub.requests == []


# ---------------------------------------------------------------------------------------------
# transformers


def test_push_text_run_uploads_safetensors_only_and_loads_back(fake_hub, text_run, tiny_bert_dir, token):
    push(text_run, "alice/tiny-imdb", license="mit")
    files = repo_files(fake_hub, "alice/tiny-imdb")
    tokenizer_files = {p.name for p in tiny_bert_dir.iterdir() if p.name.startswith(("tokenizer", "special"))}
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors", "recipe.yaml",
                          "all_results.json", "training_curves.png", "confusion_matrix.png", *tokenizer_files}
    assert not any(name.endswith(PICKLES) for name in files)  # pytorch_model.bin and training_args.pt stay
    assert not any(TOKEN.encode() in content for content in files.values())

    data = card_data(files["README.md"])
    results = json.loads((text_run / "all_results.json").read_text())
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert data["license"] == "mit"
    assert data["base_model"] == "google-bert/bert-base-uncased" and data["datasets"] == ["stanfordnlp/imdb"]
    assert model_index_values(data) == {"accuracy": results["eval_accuracy"], "f1": results["eval_f1"],
                                        "loss": results["eval_loss"]}
    (entry,) = data["model-index"]
    assert entry["name"] == "tiny-imdb"
    assert entry["results"][0]["dataset"] == {"name": "stanfordnlp/imdb", "type": "stanfordnlp/imdb"}
    readme = files["README.md"].decode()
    assert 'AutoModelForSequenceClassification.from_pretrained("alice/tiny-imdb")' in readme
    assert "| epochs | 3 (best model: epoch 3) |" in readme and "`neg`, `pos`" in readme

    torch.testing.assert_close(text_model_outputs("alice/tiny-imdb"), text_model_outputs(text_run),
                               rtol=0, atol=0)


def test_pickle_only_model_folder_is_converted_to_safetensors(fake_hub, chinese_qa_bin, token):
    """The layout users download by hand (pytorch_model.bin): the upload carries model.safetensors."""
    from transformers import AutoModelForQuestionAnswering

    before = files_in(chinese_qa_bin)
    push(chinese_qa_bin, "alice/zh-qa")
    assert files_in(chinese_qa_bin) == before  # the folder itself is left as it is
    files = repo_files(fake_hub, "alice/zh-qa")
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors", "vocab.txt",
                          "tokenizer_config.json", "special_tokens_map.json"}
    data = card_data(files["README.md"])
    assert data["pipeline_tag"] == "question-answering" and data["library_name"] == "transformers"
    assert "model-index" not in data  # no all_results.json: no results to claim

    ids = torch.tensor([[2, 10, 11, 12, 3, 13, 14, 15, 16, 3]])
    local = AutoModelForQuestionAnswering.from_pretrained(chinese_qa_bin).eval()(input_ids=ids)
    hub = AutoModelForQuestionAnswering.from_pretrained("alice/zh-qa").eval()(input_ids=ids)
    torch.testing.assert_close(hub.start_logits, local.start_logits, rtol=0, atol=0)
    torch.testing.assert_close(hub.end_logits, local.end_logits, rtol=0, atol=0)


def test_a_readme_of_ones_own_is_uploaded_as_it_is(fake_hub, timm_run, token, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(timm_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "README.md").write_text("---\nlicense: mit\n---\n# My ants model\n")
    push(run, "alice/ants")
    assert repo_files(fake_hub, "alice/ants")["README.md"] == b"---\nlicense: mit\n---\n# My ants model\n"
    # a card hfkit wrote (say, copied from a dry run) is written again, with the current results
    (run / "README.md").write_text(f"{GENERATED_MARK}\nold card\n")
    push(run, "alice/ants")
    assert "old card" not in repo_files(fake_hub, "alice/ants")["README.md"].decode()


def test_pushed_result_folder_downloads_again(fake_hub, token, tmp_path):
    """push and download agree, through create_repo and commits."""
    result = tmp_path / "result"
    (result / "checkpoints").mkdir(parents=True)
    files = {"config.json": b'{"architecture": "resnet18"}', "model.safetensors": b"weights",
             "README.md": b"# result\n", "metrics.json": b"{}"}
    for name, content in {**files, "checkpoints/step_1.bin": b"state", "train.log": b"log"}.items():
        (result / name).write_bytes(content)

    url = push(result, "me/result")
    assert url.startswith(f"{fake_hub.url}/me/result/commit/")
    assert set(repo_files(fake_hub, "me/result")) == {".gitattributes", *files}
    assert files_in(download("me/result", tmp_path / "again")) == {
        k: v for k, v in files.items() if k != "metrics.json"}


# ---------------------------------------------------------------------------------------------
# The card on its own, for each task


def write_folder(folder: Path, config: dict, recipe: str | None, overrides: list[str],
                 results: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if recipe:
        save_recipe(load_recipe(recipe, overrides, output_dir=str(folder)), folder / "recipe.yaml")
    if results:
        (folder / "all_results.json").write_text(json.dumps(results))
    return folder


TIMM_CONFIG = {"architecture": "resnet18", "num_classes": 2, "label_names": ["ants", "bees"]}
BERT_CONFIG = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}


@pytest.mark.parametrize("config,recipe,overrides,base_model,datasets", [
    (TIMM_CONFIG, "hymenoptera", [], "timm/resnet18.tv_in1k", None),  # timm's own Hub repo for the tag
    (TIMM_CONFIG, "hymenoptera", ["model.name=resnet18"], "timm/resnet18.a1_in1k", None),  # default tag
    (TIMM_CONFIG, "hymenoptera", ["model.pretrained=false"], None, None),
    (TIMM_CONFIG, "hymenoptera", ["model.name=hf-hub:timm/resnet50.a1_in1k"], "timm/resnet50.a1_in1k", None),
    (TIMM_CONFIG, "hymenoptera", ["model.name=local-dir:/tmp/x"], None, None),
    (TIMM_CONFIG, "tiny-imagenet", ["model.pretrained=./weights/r50.safetensors"], None,
     ["zh-plus/tiny-imagenet"]),
    ({**TIMM_CONFIG, "architecture": "resnet18_cifar"}, "cifar10", ["model.pretrained=true"], None,
     ["uoft-cs/cifar10"]),  # resnet18_cifar has no Hub weights
    (BERT_CONFIG, "imdb", [], "google-bert/bert-base-uncased", ["stanfordnlp/imdb"]),
    (BERT_CONFIG, "imdb", ["model.name=./models/bert", "data.path=./data/reviews.csv"], None, None),
    (BERT_CONFIG, "imdb", ["model.pretrained=false"], None, ["stanfordnlp/imdb"]),
])
def test_card_names_base_model_and_data_only_when_they_are_hub_repos(tmp_path, config, recipe, overrides,
                                                                      base_model, datasets):
    folder = write_folder(tmp_path / "m", config, recipe, overrides)
    data = model_card(folder, "alice/m").data.to_dict()
    assert data.get("base_model") == base_model and data.get("datasets") == datasets


def test_card_of_a_cifar_model_says_to_import_hfkit(tmp_path):
    folder = write_folder(tmp_path / "m", {**TIMM_CONFIG, "architecture": "resnet18_cifar"}, "cifar10", [])
    text = str(model_card(folder, "alice/cifar"))
    assert "import hfkit.models" in text and 'create_model("hf-hub:alice/cifar"' in text


@pytest.mark.parametrize("config,recipe,results,pipeline_tag,metrics", [
    ({"architectures": ["GPT2LMHeadModel"]}, "gpt2", {"eval_perplexity": 21.5, "eval_loss": 3.068},
     "text-generation", {"perplexity": 21.5, "loss": 3.068}),
    ({"architectures": ["BertForQuestionAnswering"]}, "cmrc2018",
     {"eval_exact_match": 66.5, "eval_f1": 85.25, "qa_scorer": "cmrc2018"}, "question-answering",
     {"exact_match": 66.5, "f1": 85.25}),
])
def test_card_metadata_per_task_is_what_the_hub_accepts(tmp_path, config, recipe, results, pipeline_tag,
                                                        metrics):
    card = model_card(write_folder(tmp_path / "m", config, recipe, [], results), "alice/m", license="mit")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == pipeline_tag and data["library_name"] == "transformers"
    assert model_index_values(data) == metrics and data["license"] == "mit"
    assert readme_metadata_errors(str(card)) == []
    if recipe == "gpt2":
        dataset = data["model-index"][0]["results"][0]["dataset"]
        assert dataset["config"] == "wikitext-2-raw-v1" and data["datasets"] == ["Salesforce/wikitext"]
        assert 'pipeline("text-generation", model="alice/m")' in str(card)
    else:
        assert "F1 (CMRC 2018)" in str(card) and "hfkit qa --model alice/m" in str(card)


# ---------------------------------------------------------------------------------------------
# The command line and the recipe


def test_cli_push_and_dry_run(fake_hub, timm_run, token, tmp_path, capsys, no_backoff):
    from hfkit.cli import main

    assert main(["push", str(timm_run), "--repo-id", "alice/ants", "--dry-run", str(tmp_path / "dry")]) == 0
    out = capsys.readouterr().out
    assert "Would upload 8 files to alice/ants" in out
    assert "left out: eval_predictions.json, checkpoints/" in out
    assert "nothing was sent" in out and fake_hub.requests == []

    fake_hub.fail_next("POST", "/commit/", 503, times=6)
    assert main(["push", str(timm_run), "--repo-id", "alice/ants", "--private"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfkit push: error: the push to alice/ants failed")
    assert "run the same command again" in err

    assert main(["push", str(timm_run), "--repo-id", "alice/ants", "--private", "--revision", "dev",
                 "--commit-message", "first upload"]) == 0
    assert f"{fake_hub.url}/alice/ants/commit/" in capsys.readouterr().out
    repo = fake_hub.repo("alice/ants")
    assert repo.private and repo.messages[repo.branches["dev"]] == "first upload"
    assert set(repo_files(fake_hub, "alice/ants", "dev")) == TIMM_FILES | {".gitattributes"}
    with pytest.raises(SystemExit):
        main(["push", str(timm_run), "--repo-id", "alice/ants", "--token", TOKEN])  # there is no --token


def test_recipe_hub_push_uploads_after_training(fake_hub, token, tmp_path, capsys):
    from hfkit.finetune import finetune

    data = write_image_folder(tmp_path / "images", {"train": 12, "val": 6})
    out = tmp_path / "run"
    finetune(load_recipe("hymenoptera", [*tiny_image_overrides(data), "hub.push=true", "hub.license=mit",
                                         "hub.repo_id=alice/resnet18-ants-bees"], output_dir=str(out)))
    assert f"Pushed to {fake_hub.url}/alice/resnet18-ants-bees/commit/" in capsys.readouterr().out
    files = repo_files(fake_hub, "alice/resnet18-ants-bees")
    assert set(files) == TIMM_FILES | {".gitattributes"}
    assert files["all_results.json"] == (out / "all_results.json").read_bytes()
    assert card_data(files["README.md"])["license"] == "mit"
    assert b"hub:\n  push: true" in files["recipe.yaml"] and TOKEN.encode() not in files["recipe.yaml"]


def test_a_failed_push_after_training_says_how_to_push_the_saved_results(fake_hub, timm_run, token, tmp_path,
                                                                         no_backoff):
    from hfkit.cli import main
    from hfkit.finetune import finish
    from hfkit.training import TrainerState

    out = tmp_path / "run"
    shutil.copytree(timm_run, out, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = load_recipe(str(out / "recipe.yaml"),
                         ["hub.push=true", "hub.repo_id=alice/ants", "hub.private=true"], output_dir=str(out))
    fake_hub.fail_next("POST", "/commit/", 500, times=6)
    with pytest.raises(ConnectionError) as e:  # the end of finetune(), after training
        finish(recipe, TrainerState(), json.loads((out / "all_results.json").read_text()), lambda out: None)
    command = f"hfkit push {out} --repo-id alice/ants --private"
    assert f"run `{command}` (no need to train again)" in str(e.value)
    assert "run the same command again" not in str(e.value)
    assert main(command.split()[1:]) == 0
    assert set(repo_files(fake_hub, "alice/ants")) == TIMM_FILES | {".gitattributes"}


def _card_python(readme: str, section: str) -> str:
    """The first ```python block after the heading ``section``."""
    return readme.split(f"## {section}\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("kind", ["timm", "text"])
def test_an_export_goes_up_as_onnx_and_runs_as_the_card_says(fake_hub, timm_run, text_run, token, tmp_path,
                                                             kind, capsys, monkeypatch):
    """`hfkit export RUN` then `hfkit push RUN`: onnx/ goes up beside the model (the unchecked file
    never); downloaded as the card says, the card's onnxruntime code runs and names the class that
    hfkit predict names."""
    from hfkit.export import export

    run = tmp_path / "run"
    shutil.copytree(timm_run if kind == "timm" else text_run, run)
    export(str(run))
    (run / "onnx" / "model.unchecked.onnx").write_bytes(b"left by a failed check")
    push(run, f"alice/{kind}")
    files = repo_files(fake_hub, f"alice/{kind}")
    onnx = {n for n in files if n.startswith("onnx/")}
    assert {"onnx/model.onnx", "onnx/config.json", "onnx/export.json"} <= onnx
    assert "onnx/model.unchecked.onnx" not in onnx
    assert files["onnx/model.onnx"] == (run / "onnx" / "model.onnx").read_bytes()

    readme = files["README.md"].decode()
    assert "## ONNX" in readme and '--include "onnx/*"' in readme
    target = tmp_path / "models" / kind
    download(f"alice/{kind}", target, include=["onnx/*"])
    set_offline(monkeypatch, True)
    image = tmp_path / "image.jpg"
    from conftest import make_image

    make_image((60, 40, 200), seed=7).save(image)
    monkeypatch.chdir(tmp_path)
    code = _card_python(readme, "ONNX").replace(f"./models/{kind}", str(target))
    capsys.readouterr()
    exec(compile(code, "card", "exec"), {})
    printed = capsys.readouterr().out.strip()
    from hfkit.inference import ImageClassifier, TextClassifier

    if kind == "timm":
        expected = ImageClassifier(str(run)).predict([image], top_k=1)[0][0][0]
    else:
        expected = TextClassifier(str(run)).predict(["A text to classify."], top_k=1)[0][0][0]
    assert printed == expected


def test_an_export_folder_alone_is_not_pushed(fake_hub, timm_run, token, tmp_path):
    from hfkit.export import export

    export(str(timm_run), out_dir=str(tmp_path / "onnx"))
    with pytest.raises(ValueError, match="push the result folder it came from"):
        push(tmp_path / "onnx", "alice/x")


def test_an_adapter_on_a_hub_model_goes_up_alone_and_runs_as_its_card_says(fake_hub, tiny_bert_dir, token,
                                                                          tmp_path, capsys):
    """A LoRA run on a Hub model: the push carries the adapter and head, not the base weights; the card
    is a peft card naming the base (the Hub lists it among the base's adapters), and its Python,
    run against the Hub, prints what the trained model says."""
    from conftest import write_review_parquet

    from hfkit.finetune import finetune
    from hfkit.inference import TextClassifier

    fake_hub.add_repo("alice/tiny-bert", files_in(tiny_bert_dir))
    data = write_review_parquet(tmp_path / "data", 32, 16)
    finetune(load_recipe("imdb", [f"data.path={data}", "model.name=alice/tiny-bert", "data.max_length=32",
                                  "train.epochs=1", "train.batch_size=8", "train.mixed_precision=no",
                                  "train.strategy=lora", "train.lora_r=4", "train.lr=1e-2"],
                         output_dir=str(tmp_path / "run")))
    push(tmp_path / "run", "alice/tiny-bert-lora")
    files = repo_files(fake_hub, "alice/tiny-bert-lora")
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= set(files)
    assert "model.safetensors" not in files
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "alice/tiny-bert"

    readme = files["README.md"].decode()
    data = card_data(files["README.md"])
    assert data["library_name"] == "peft" and data["base_model"] == "alice/tiny-bert"
    assert data["base_model_relation"] == "adapter" and "lora" in data["tags"]
    assert "LoRA adapter (rank 4, alpha 16.0, on `query`, `value`)" in readme
    assert "| LoRA | rank 4, alpha 16.0, dropout 0.0, on `query`, `value`; trained in full: " in readme
    assert "hf download alice/tiny-bert" in readme  # offline use needs the base as well

    capsys.readouterr()
    exec(compile(_card_python(readme, "How to use"), "card", "exec"), {})
    label, prob = capsys.readouterr().out.split()
    expected = TextClassifier(str(tmp_path / "run")).predict(["A text to classify."], top_k=1)[0][0]
    assert label == expected[0] and float(prob) == pytest.approx(expected[1], abs=1e-6)

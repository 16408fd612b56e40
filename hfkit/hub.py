"""Talking to the Hugging Face Hub: pushing result folders and downloading repos for offline use
(whether it can be reached, and what to say when not, is hfkit.offline's)."""

from __future__ import annotations

import glob
import importlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hfkit.offline import behind_proxy, hub_reachable, offline_mode, offline_weights_help

# ---------------------------------------------------------------------------------------------
# Pushing a result folder to the Hub

# What a push shares: the folder's top-level files that loading and reading the model need (what
# from_pretrained and timm's hf-hub: read), the recipe, the metrics and the plots; weights in safetensors
# only. Subfolders never go: checkpoints/ (optimizer state, pickles), tensorboard/ (logs), eval-*/ (what
# `hfkit evaluate` wrote), nor do pickles, hidden files, or predictions.json/nbest_predictions.json/
# eval_predictions.json
# (answers to every evaluation question: megabytes that loading and the card do not need, holding text
# of the evaluation data, whose license is not the model's).
PUSH_PATTERNS = ["*.safetensors", "*.json", "*.yaml", "*.png", "*.txt", "*.model", "*.jinja", "README.md",
                 "*.onnx", "*.onnx.data"]
PICKLES = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]
PUSH_EXCLUDE = [*PICKLES, ".*", "predictions.json", "nbest_predictions.json", "eval_predictions.json",
                "predictions.md",  # evaluation texts quoted: the data may not be the user's to publish
                "*.unchecked.onnx"]  # an export whose parity check did not pass
# `hfkit export`'s folder inside a result folder goes up as that subfolder (the Hub's place for ONNX
# copies, which transformers.js and optimum read)
EXPORT_FOLDER = "onnx"
# A folder without safetensors weights but with this pickle (a transformers or timm model saved the old
# way) gets it converted to model.safetensors in what is uploaded; the folder itself is left as it is.
CONVERTED_PICKLE = "pytorch_model.bin"
# `hfkit push --space --dry-run DIR` writes the Space folder here, inside the dry run's folder
SPACE_PREVIEW = "space"
AGAIN = "run the same command again"


def _check_adapter_base(folder: Path) -> None:
    """A LoRA adapter goes up alone, so its base model must be one others can load: a Hub id."""
    from hfkit.results import ADAPTER_CONFIG, read_result

    if not (folder / ADAPTER_CONFIG).is_file():
        return
    found = read_result(str(folder))
    base = found.base_model or ""
    if found.family == "timm":  # timm.create_model("hf-hub:...") reads whole weights, not an adapter
        raise ValueError(f"'{folder}' is a LoRA adapter on a timm model, which timm cannot load from the "
                         f"Hub: merge it (hfkit merge {folder} --out DIR) and push DIR")
    if Path(base).is_absolute() or Path(base).expanduser().exists():
        raise ValueError(f"'{folder}' is a LoRA adapter on the local model folder {base}, which nobody who "
                         f"downloads it has: merge it (hfkit merge {folder} --out DIR) and push DIR, or "
                         "train the adapter on a Hub model id")


def push_plan(folder: str | os.PathLike) -> tuple[list[str], list[str], str | None]:
    """(files uploaded as they are, files and folders left out, pickle converted to model.safetensors).

    Raises FileNotFoundError for a folder that is not a model folder, and ValueError for one whose
    weights are pickles hfkit does not convert.
    """
    from huggingface_hub.utils import filter_repo_objects

    from hfkit.results import ONNX_FILE

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"no result folder {folder}")
    _check_adapter_base(folder)
    entries = sorted(folder.iterdir())
    files = [p.name for p in entries if p.is_file()]
    picked = _shareable(files)
    # hidden entries (the run's lock file, .cache/) go unmentioned: nobody expects them uploaded
    left_out = [n for n in files if n not in picked and not n.startswith(".")] + [
        p.name + "/" for p in entries if p.is_dir() and not p.name.startswith(".")]
    export = folder / EXPORT_FOLDER
    if (export / ONNX_FILE).is_file():
        inside = [p.name for p in export.iterdir() if p.is_file()]
        picked += [f"{EXPORT_FOLDER}/{n}" for n in _shareable(inside)]
        left_out.remove(f"{EXPORT_FOLDER}/")
    if "config.json" not in picked:
        raise FileNotFoundError(f"{folder} is not a model folder: it has no config.json (a result folder of "
                                "`hfkit finetune`, or a folder saved with save_pretrained, has one)")
    if ONNX_FILE in files:
        raise ValueError(f"{folder} is an export folder: push the result folder it came from, and its "
                         f"{EXPORT_FOLDER}/ goes up with the model")
    if any(n.endswith(".safetensors") for n in picked):
        return picked, left_out, None
    if CONVERTED_PICKLE in files:
        return picked, left_out, CONVERTED_PICKLE
    pickles = list(filter_repo_objects(files, allow_patterns=PICKLES))
    if pickles:
        raise ValueError(f"{folder} holds its weights only as pickles ({_names(pickles)}), which hfkit does "
                         "not upload (unpickling can run code). Save them as safetensors first: load the "
                         "model and save it with save_pretrained (transformers) or timm's save_for_hf(..., "
                         "safe_serialization=True), then push again.")
    raise FileNotFoundError(f"{folder} has no model weights: no *.safetensors (nor {CONVERTED_PICKLE})")


def _shareable(names: list[str]) -> list[str]:
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(sorted(names), allow_patterns=PUSH_PATTERNS,
                                    ignore_patterns=PUSH_EXCLUDE))


def push(folder: str | os.PathLike, repo_id: str, private: bool = False, revision: str | None = None,
         create_pr: bool = False, commit_message: str | None = None,
         dry_run: str | os.PathLike | None = None, license: str | None = None) -> str:
    """Upload result folder ``folder`` to Hub model repo ``repo_id`` with a model card; returns the URL
    of the commit (of the pull request with ``create_pr``), or with ``dry_run`` the folder it wrote.

    What goes up is staged first (``push_plan``): the shareable files, ``pytorch_model.bin`` converted
    to ``model.safetensors`` when the folder has no safetensors weights, and ``README.md``: the card
    ``hfkit.cards.model_card`` writes (license: ``license``, else the recipe's ``hub.license``, else
    apache-2.0), unless the folder has a README.md of its own (one without the generated card's first
    line), which goes up as it is. ``dry_run=DIR`` writes exactly that into DIR and contacts no server.

    The repo is created if needed (``private`` on request; a private push to an existing public repo is
    refused), ``revision`` is a branch (created from main if missing) or ``refs/pr/N`` (an open pull
    request), and ``create_pr`` opens a pull request against main. The token comes from HF_TOKEN or
    ``hf auth login``, never from an argument; no staged file may hold it. A failed upload raises
    ConnectionError saying what to do; running it again sends only what is not on the Hub yet.
    """
    folder = Path(folder).expanduser()
    _check_repo_id(repo_id)
    if create_pr and revision not in (None, "main"):  # huggingface_hub opens pull requests against main
        raise ValueError("--create-pr opens a pull request against main, so it takes no --revision: push to "
                         "a branch with --revision alone, or add to an open pull request N with "
                         "--revision refs/pr/N")
    files, left_out, convert = push_plan(folder)
    tokens = _known_tokens()
    for what, text in (("--commit-message", commit_message), ("--revision", revision)):
        if text and any(t in text for t in tokens):
            raise ValueError(f"{what} holds your Hugging Face token: nothing was uploaded. Tokens come from "
                             "HF_TOKEN or `hf auth login`, never from arguments.")
    license = license or _recipe_license(folder)
    uploaded = sorted({*files, "README.md", *(["model.safetensors"] if convert else [])})
    summary = (f"{len(uploaded)} files to {repo_id}: {', '.join(uploaded)}"
               + (f" (left out: {', '.join(left_out)})" if left_out else "")
               + (f"; {convert} converted to model.safetensors" if convert else ""))
    if dry_run is not None:
        print(f"Would upload {summary}")
        out = _empty_dry_run_folder(Path(dry_run).expanduser(), folder)
        _stage(folder, out, files, convert, repo_id, license, link=False)
        _refuse_tokens(out, tokens, folder)
        return str(out)

    _refuse_push_without_hub(repo_id)
    print(f"Uploading {summary}")
    from huggingface_hub import HfApi

    with _staging_folder(folder) as staged:
        _stage(folder, staged, files, convert, repo_id, license, link=True)
        _refuse_tokens(staged, tokens, folder)
        api = HfApi()
        with _explain_push_errors(repo_id):
            api.create_repo(repo_id, private=private, exist_ok=True)
            if private and not api.model_info(repo_id).private:
                raise ValueError(f"{repo_id} already exists and is public, so a private push would publish "
                                 f"these files: nothing was uploaded. Make it private in its settings "
                                 "(or push without --private).")
            if revision and revision != "main" and not revision.startswith("refs/"):
                api.create_branch(repo_id, branch=revision, exist_ok=True)  # from main, if missing
            commit = api.upload_folder(repo_id=repo_id, folder_path=staged, revision=revision,
                                       create_pr=create_pr, commit_message=commit_message
                                       or f"Upload {folder.name} with hfkit push")
    return commit.pr_url or commit.commit_url


def _check_repo_id(repo_id: str, option: str = "--repo-id") -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"{option} {repo_id!r} is not a valid repo id: {e}") from e
    if "/" not in repo_id:
        raise ValueError(f"{option} {repo_id!r} needs its owner: your user or organisation name, as in "
                         f"alice/{repo_id}")


def _recipe_license(folder: Path) -> str | None:
    from hfkit.results import read_result

    return read_result(str(folder)).section("hub").get("license")


def _stage(folder: Path, to: Path, files: list[str], convert: str | None, repo_id: str,
           license: str | None, link: bool) -> None:
    """Put into ``to`` exactly what is uploaded: the files, converted weights, and the card."""
    from hfkit.cards import is_generated, model_card

    for name in files:
        if name == "README.md":
            continue
        (to / name).parent.mkdir(exist_ok=True)  # onnx/
        if link:  # a hard link costs no space; the staging folder lives beside the files when it can
            try:
                os.link(folder / name, to / name)
                continue
            except OSError:
                pass
        shutil.copy2(folder / name, to / name)
    if convert:
        _pickle_to_safetensors(folder / convert, to / "model.safetensors")
    readme = folder / "README.md"
    if "README.md" in files and not is_generated(readme.read_text(encoding="utf-8", errors="replace")):
        shutil.copy2(readme, to / "README.md")  # the user's own card: never rewritten
    else:
        (to / "README.md").write_text(str(model_card(to, repo_id, license=license)), encoding="utf-8")


def _pickle_to_safetensors(source: Path, target: Path) -> None:
    """A pickled state dict as safetensors, tensor for tensor (tied tensors become equal copies)."""
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(f"{source} is not a plain state dict ({type(e).__name__}); save the model with "
                         "save_pretrained first, then push again.") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source} is not a state dict of tensors; save the model with save_pretrained "
                         "first, then push again.")
    # "format": "pt" is what transformers checks before loading a safetensors file
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(target),
              metadata={"format": "pt"})


@contextmanager
def _staging_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder, inside the result folder when it is writable (so hard links work)."""
    import tempfile

    try:
        tmp = tempfile.TemporaryDirectory(prefix=".hfkit-push-", dir=folder)
    except OSError:
        tmp = tempfile.TemporaryDirectory(prefix="hfkit-push-")
    with tmp as path:
        yield Path(path)


def _empty_dry_run_folder(out: Path, folder: Path) -> Path:
    """``out``, new or emptied: an empty folder, or the files of an earlier dry run (its generated card)."""
    from hfkit.cards import is_generated

    if out.resolve() == folder.resolve():
        raise ValueError("--dry-run needs a folder other than the result folder")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--dry-run {out} is a file; give a folder")
    old = sorted(out.iterdir()) if out.is_dir() else []
    readme = out / "README.md"
    earlier = readme.is_file() and is_generated(readme.read_text(encoding="utf-8", errors="replace"))
    if old and (not earlier or any(p.is_dir() and p.name not in (EXPORT_FOLDER, SPACE_PREVIEW) for p in old)):
        raise FileExistsError(f"--dry-run folder {out} is not empty: choose a new folder (an earlier dry "
                              "run's folder is replaced)")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _known_tokens() -> set[str]:
    """The Hugging Face tokens this process could send: HF_TOKEN (and its old name) and saved logins."""
    found = {os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")}
    try:
        from huggingface_hub import get_token
        from huggingface_hub.utils import get_stored_tokens

        found.add(get_token())
        found.update(get_stored_tokens().values())
    except Exception:  # a broken token file is no reason to upload unchecked: the env ones remain
        pass
    return {t.strip() for t in found if t and len(t.strip()) >= 8}


def _refuse_tokens(staged: Path, tokens: set[str], folder: Path) -> None:
    """Refuse to upload when a staged file holds a token (weights: only their metadata header is read)."""
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":  # 8 bytes of header length, then the JSON header
                size = int.from_bytes(f.read(8), "little")
                data = f.read(size) if size < 100_000_000 else b""
            else:
                data = f.read()
        if any(t.encode() in data for t in tokens):
            name = path.relative_to(staged)
            where = folder / name if (folder / name).exists() else path
            raise ValueError(f"{name} holds your Hugging Face token: nothing was uploaded. Remove the "
                             f"token from {where} and push again; if the file was shared anywhere, revoke "
                             "the token at https://huggingface.co/settings/tokens.")


def _refuse_push_without_hub(repo_id: str) -> None:
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE or offline_mode():
        raise ConnectionError(f"pushing to {repo_id} needs the network, and offline mode is on "
                              f"(HF_HUB_OFFLINE is set): run `unset HF_HUB_OFFLINE`, then {AGAIN}. "
                              "`--dry-run DIR` writes what would be uploaded without the network.")
    if not get_token():
        raise ConnectionError(f"no Hugging Face token to push {repo_id} with: run `hf auth login` (with a "
                              f"token that may write) or set HF_TOKEN, then {AGAIN}.")
    if not behind_proxy() and not hub_reachable():
        raise ConnectionError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to push {repo_id}: "
                              f"check the network (and HF_ENDPOINT, if set), then {AGAIN}.")


@contextmanager
def _explain_push_errors(repo_id: str) -> Iterator[None]:
    """The client's errors during a push as one ConnectionError each, saying what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    login = ("log in with a token that may write to it (`hf auth login`, or set HF_TOKEN; a fine-grained "
             "token needs write access to that user or organisation)")
    resend = f"then {AGAIN} (files already on the Hub are not sent twice)"
    try:
        yield
    except RepositoryNotFoundError as e:
        raise ConnectionError(f"the Hub does not let this token see {repo_id}: check the id and {login}; "
                              f"{resend}.") from e
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        why = str(e).strip().splitlines()[0]
        if status in (401, 403):
            raise ConnectionError(f"the Hub refused the push to {repo_id} ({why}): {login}; {resend}.") from e
        raise ConnectionError(f"the push to {repo_id} failed ({why}). Nothing is lost: {resend}.") from e
    except (OfflineModeIsEnabled, *_network_errors()) as e:
        raise ConnectionError(f"lost the connection to {constants.ENDPOINT} while pushing {repo_id} "
                              f"({type(e).__name__}: {e}); check the network, {resend}.") from e


# ---------------------------------------------------------------------------------------------
# Downloading a repo into a folder for offline use

# What from_pretrained (transformers, and timm's hf-hub: models) reads from a model folder's top level,
# besides the weights. Subfolders are left out: they hold other exports (onnx/, openvino/) and originals.
MODEL_FILES = {
    "config.json", "generation_config.json", "README.md",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json",
}
MODEL_FILE_SUFFIXES = (".model",)  # sentencepiece: tokenizer.model, spiece.model, sentencepiece.bpe.model

# Weight formats, best first; a repo often holds several copies of the same weights, so only the first
# format found is fetched. safetensors first: loading it cannot run code, unpickling a .bin can.
# The names are exactly what save_pretrained writes (one file, or shards plus their index), so
# variants (model.fp16.safetensors) and other layouts (consolidated.safetensors) are not fetched too.
WEIGHT_FORMATS = (
    (re.compile(r"model(-\d+-of-\d+)?\.safetensors"), "model.safetensors.index.json"),
    (re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin"), "pytorch_model.bin.index.json"),
)


def select_files(files: list[str], repo_type: str) -> list[str]:
    """The files of a repo listing that ``download`` fetches; [] for a model repo without usable weights.

    Data sets (and Spaces) come whole but for git's own ``.gitattributes``. Model repos come with one
    weight format and the configuration and tokenizer files: the other frameworks' copies
    (tf_model.h5, flax, onnx, ...) and training leftovers (training_args.bin, optimizer states) are
    often most of a repo's size, and nothing here can use them.
    """
    if repo_type != "model":
        return sorted(f for f in files if f.rsplit("/", 1)[-1] != ".gitattributes")
    top = [f for f in files if "/" not in f]
    for weights, index in WEIGHT_FORMATS:
        found = [f for f in top if weights.fullmatch(f) or f == index]
        if any(f != index for f in found):
            return sorted(found + [f for f in top if f in MODEL_FILES or f.endswith(MODEL_FILE_SUFFIXES)])
    return []


def download(repo_id: str, to: str | os.PathLike, repo_type: str = "model", revision: str | None = None,
             include: list[str] | None = None) -> Path:
    """Fetch a Hub repo into local folder ``to`` for offline use; returns the folder.

    A model repo brings what loading it needs (see ``select_files``), a data set everything;
    ``include`` (globs such as ``"*.onnx"`` or ``"data/train-*"``) replaces that choice.
    Fetching again into the same folder only fetches what changed.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    _refuse_without_hub(repo_id, repo_type)
    api, folder = HfApi(), Path(to).expanduser()
    with _explain_hub_errors(repo_id, repo_type, revision):
        # Pin the commit, so that the listing and the files agree even if someone pushes in between.
        commit = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        files = api.list_repo_files(repo_id, repo_type=repo_type, revision=commit)
    if include:
        picked = list(filter_repo_objects(files, allow_patterns=include))
    else:
        picked = select_files(files, repo_type)
    if not picked:
        raise FileNotFoundError(_nothing_to_fetch(repo_id, repo_type, files, include))
    with _explain_hub_errors(repo_id, repo_type, revision):
        # Exact names, escaped: allow_patterns are globs, and a file name may hold [ or *.
        snapshot_download(repo_id, repo_type=repo_type, revision=commit, local_dir=folder,
                          allow_patterns=[glob.escape(f) for f in picked])
    # On a lost connection snapshot_download returns what the folder already holds: say so instead.
    missing = [f for f in picked if not (folder / f).is_file()]
    if missing:
        raise ConnectionError(f"the download of {repo_id} stopped before {_names(missing)}; check the "
                              "connection and run the same command again (finished files are kept).")
    return folder


def _refuse_without_hub(repo_id: str, repo_type: str) -> None:
    """Fail at once, saying what to do, rather than after the client's retries or from deep inside it."""
    from huggingface_hub import constants

    what = "dataset" if repo_type == "dataset" else "model"
    if constants.HF_HUB_OFFLINE or offline_mode():
        raise ConnectionError(f"downloading {repo_id} needs the network, and offline mode is on "
                              "(HF_HUB_OFFLINE is set): run `unset HF_HUB_OFFLINE`, then the same command "
                              "again.\nWithout network here: " + offline_weights_help(repo_id, what))
    # A quick connect first: the client sets no timeout, so an unanswered connect would hang for minutes.
    # Behind a proxy a direct connect proves nothing; there the client decides.
    if not behind_proxy() and not hub_reachable():
        raise ConnectionError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to download "
                              f"{repo_id}. Check the network (and HF_ENDPOINT, if set), or:\n"
                              + offline_weights_help(repo_id, what))


@contextmanager
def _explain_hub_errors(repo_id: str, repo_type: str, revision: str | None) -> Iterator[None]:
    """Turn the client's errors into one ConnectionError each, saying what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = constants.ENDPOINT + ("/" if repo_type == "model" else f"/{repo_type}s/") + repo_id
    login = "log in here (`hf auth login`, or set HF_TOKEN) and run the same command again"
    try:
        yield
    except GatedRepoError as e:  # before RepositoryNotFoundError, which it is a kind of
        raise ConnectionError(f"{repo_id} is gated: accept its conditions at {page} with your account, "
                              f"then {login}.") from e
    except RepositoryNotFoundError as e:
        other = "dataset" if repo_type == "model" else "model"
        raise ConnectionError(f"{repo_type} repo {repo_id} was not found at {constants.ENDPOINT}: check the "
                              f"id, and the repo type (is it a {other}?). If it is private, {login}.") from e
    except RevisionNotFoundError as e:
        raise ConnectionError(f"{repo_id} has no revision {revision!r}: use a branch, tag or commit "
                              f"that {page} lists.") from e
    except HfHubHTTPError as e:
        raise ConnectionError(f"the Hub could not serve {repo_id} ({str(e).strip().splitlines()[0]}); "
                              "try again later.") from e
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, *_network_errors()) as e:
        raise ConnectionError(f"could not reach {constants.ENDPOINT} while fetching {repo_id} "
                              f"({type(e).__name__}: {e}); check the network and run the same command again "
                              "(finished files are kept).") from e


def _network_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's transport errors: httpx2 in huggingface_hub 2.x, httpx in 1.x, requests before."""
    found = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _nothing_to_fetch(repo_id: str, repo_type: str, files: list[str], include: list[str] | None) -> str:
    there = f"Files in the repo: {_names(files)}." if files else "The repo holds no files."
    if include:
        return f"no file of {repo_id} matches include={include}. {there}"
    if repo_type != "model":
        return f"{repo_type} repo {repo_id} holds nothing to download. {there}"
    return (f"{repo_id} has no weights hfkit can load: no model.safetensors (or its shards "
            "model-0000x-of-0000y.safetensors) and no pytorch_model.bin (or its shards) at its top level. "
            f"{there}\nTo fetch other files anyway, pass include patterns (for example include=['*.onnx']).")


def _names(files: list[str], most: int = 30) -> str:
    shown = ", ".join(files[:most])
    return shown + (f", ... ({len(files) - most} more)" if len(files) > most else "")

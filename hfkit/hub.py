"""Talking to the Hugging Face Hub: knowing when it cannot be reached, and saying what to do."""

from __future__ import annotations

import glob
import importlib
import os
import re
import socket
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint (no retries, unlike the download clients)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def go_offline_if_unreachable() -> bool:
    """Set HF_HUB_OFFLINE=1 when the Hub cannot be reached, before datasets/timm are imported.

    Without it every Hub id costs minutes of retries before failing; offline mode answers
    from the local cache at once, or fails at once with a message we can act on.
    Returns whether the process now runs offline.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    if "datasets" in sys.modules or "huggingface_hub" in sys.modules:
        return False  # too late to switch: they read the variable at import time
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    print("hfkit: the Hugging Face Hub cannot be reached; working offline "
          "(local paths and the local cache only).", file=sys.stderr)
    return True


def offline_weights_help(repo_id: str, what: str = "model") -> str:
    """How to get a Hub repo onto this machine for offline use."""
    folder = "./weights/" + repo_id.split("/")[-1]
    repo_type = " --repo-type dataset" if what == "dataset" else ""
    setting = "model.pretrained" if what == "model" else "data.path"
    return (f"On a machine with internet, run: hfkit download {repo_id}{repo_type} --to {folder}\n"
            f"copy the folder here, and pass --set {setting}={folder}")


# What a result folder shares: weights in safetensors only (never pickles), config,
# preprocessing/tokenizer files, the recipe, metrics and plots; never checkpoints or logs.
PUSH_PATTERNS = ["*.safetensors", "*.json", "*.yaml", "*.png", "*.txt", "*.model", "README.md"]
PUSH_EXCLUDE = ["checkpoints/**", "tensorboard/**", ".tmp*/**", "*.bin", "*.pt", "*.pth", "*.pkl"]


def push_result_folder(folder: str | os.PathLike, repo_id: str, private: bool = False,
                       commit_message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload the shareable files of a result folder.

    The token comes from the environment (HF_TOKEN) or ``hf auth login``, never from a recipe.
    Uploading again is safe: unchanged files are not sent twice.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=PUSH_PATTERNS,
                                   ignore_patterns=PUSH_EXCLUDE,
                                   commit_message=commit_message or f"Upload {os.path.basename(folder)}")
    except HfHubHTTPError as e:
        raise ConnectionError(f"upload to {repo_id} failed: {e}\nCheck that you are logged in "
                              "(`hf auth login` or HF_TOKEN) and may write to that repo; "
                              "then run the same command again.") from e
    return commit.commit_url


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
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ConnectionError(f"downloading {repo_id} needs the network, and offline mode is on "
                              "(HF_HUB_OFFLINE is set): run `unset HF_HUB_OFFLINE`, then the same command "
                              "again.\nWithout network here: " + offline_weights_help(repo_id, what))
    # A quick connect first: the client sets no timeout, so an unanswered connect would hang for minutes.
    # Behind a proxy a direct connect proves nothing ("no" is NO_PROXY's list); there the client decides.
    behind_proxy = any(scheme != "no" for scheme in urllib.request.getproxies())
    if not behind_proxy and not hub_reachable():
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

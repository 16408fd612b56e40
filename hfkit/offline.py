"""The bottom layer for everything that may come from the Hub: whether it can be reached, the
offline flag, telling a Hub id from a path, and the errors of loading, said as what to do.

Imports nothing heavy (no huggingface_hub): ``go_offline_if_unreachable`` must run before the
Hugging Face libraries read ``HF_HUB_OFFLINE`` at their import.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from hfkit.console import apply_if_quiet

DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = ("1", "ON", "YES", "TRUE")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".parquet", ".arrow", ".zip", ".tar", ".gz")


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint (no retries, unlike the download clients)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def behind_proxy() -> bool:
    """Whether HTTP goes through a proxy, where a direct connect proves nothing ("no" is NO_PROXY)."""
    return any(scheme != "no" for scheme in urllib.request.getproxies())


def go_offline_if_unreachable() -> bool:
    """Set HF_HUB_OFFLINE=1 when the Hub cannot be reached, before datasets/timm are imported.

    Without it every Hub id costs minutes of retries before failing; offline mode answers
    from the local cache at once, or fails at once with a message we can act on.
    Returns whether the process now runs offline.
    """
    if offline_mode():
        return True
    if "datasets" in sys.modules or "huggingface_hub" in sys.modules:
        return False  # too late to switch: they read the variable at import time
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    print("hfkit: the Hugging Face Hub cannot be reached; working offline "
          "(local paths and the local cache only).", file=sys.stderr)
    return True


def is_hub_id(name: str) -> bool:
    """``org/name`` (or ``hf-hub:org/name``) that is not a local path: ``runs/nope`` is a path
    when a folder ``runs`` is here, ``data/train.json`` a file name."""
    name = name.removeprefix("hf-hub:")
    return (bool(HUB_ID.fullmatch(name)) and not name.lower().endswith(FILE_SUFFIXES)
            and not Path(name).expanduser().exists() and not Path(name.split("/")[0]).is_dir())


def looks_like_path(name: str) -> bool:
    """A name with a folder in it that is no Hub id (``./x``, ``runs/nope`` beside ``runs/``), as
    opposed to a Hub id or a bare model name such as timm's ``resnet18``."""
    return "/" in name.removeprefix("hf-hub:") and not is_hub_id(name) or name.startswith((".", "~"))


def offline_weights_help(repo_id: str, what: str = "model", use: str | None = None) -> str:
    """How to get a Hub repo onto this machine for offline use; ``use``: the option or recipe field
    that takes the folder (default: model.pretrained, or data.path for a data set)."""
    repo_id = repo_id.removeprefix("hf-hub:")
    folder = "./models/" + repo_id.split("/")[-1]  # where `hfkit download` puts it by default
    repo_type = " --repo-type dataset" if what == "dataset" else ""
    use = use or ("model.pretrained" if what == "model" else "data.path")
    option = f"{use} {folder}" if use.startswith("--") else f"--set {use}={folder}"
    return (f"On a machine with internet, run: hfkit download {repo_id}{repo_type} --to {folder}\n"
            f"copy the folder here, and pass {option}")


@contextlib.contextmanager
def loading_weights(source: str, use: str = "--model") -> Iterator[None]:
    """Loading errors as what to do. A pickle that would run code (``torch.load(weights_only=True)``
    refused it) is reported as refused, never with torch's hint to retry unsafely; a Hub id that is
    neither cached nor reachable gets the ``hfkit download`` recipe (``use``: how to pass a folder)."""
    apply_if_quiet()  # the command line's one-line load report, without progress bars
    try:
        yield
    except (pickle.UnpicklingError, RuntimeError) as e:
        refused = e if isinstance(e, pickle.UnpicklingError) else e.__cause__  # timm wraps torch's
        if not isinstance(refused, pickle.UnpicklingError):
            raise
        found = re.search(r"GLOBAL (\S+)", str(refused))
        raise ValueError(
            f"'{source}': a weights file there is not plain weights: loading it would run code "
            f"({found.group(1) if found else 'an object other than tensors'}), so it was not loaded. "
            "Do not retry with weights_only=False: get model.safetensors from whoever made the model, "
            "or load a folder you trust.") from None
    except OSError as e:  # huggingface_hub's LocalEntryNotFoundError is one too
        if Path(source).expanduser().exists():  # a local folder: the error is about its files
            raise
        if looks_like_path(source):
            raise FileNotFoundError(f"no folder '{source}' (looked in {Path.cwd()})") from None
        raise RuntimeError(not_cached(source, use, f" ({type(e).__name__})")) from e


def not_cached(source: str, use: str, why: str = "") -> str:
    """What to do about a Hub id that is not in the local cache while the Hub is unreachable; an
    ``owner/name`` may also be a folder given from the wrong place (``runs/ants`` elsewhere)."""
    return (f"'{source}' is neither a folder here ({Path.cwd()}) nor in the local cache, and the Hub is not "
            f"reachable{why}. A folder? Give its path from here, or its full path. A Hub model?\n"
            f"{offline_weights_help(source, use=use)}")


def check_model_source(name: str, use: str) -> None:
    """Say now, before minutes of data loading, what loading model ``name`` would fail on later: a
    folder that is not there, or, offline, a Hub model that is not in the local cache. Bare names
    (timm's ``resnet18``) and prefixed sources (``local-dir:``) are left to the model's library."""
    if Path(name).expanduser().exists() or ":" in name.removeprefix("hf-hub:"):
        return
    repo, _, revision = name.partition("@") if name.startswith("hf-hub:") else (name, "", "")  # timm's @rev
    if looks_like_path(repo):
        raise FileNotFoundError(f"{use}: no folder '{name}' (looked in {Path.cwd()})")
    if is_hub_id(repo) and offline_mode():
        from huggingface_hub import try_to_load_from_cache

        # every model repo hfkit loads has a config.json (timm's and transformers')
        cached = try_to_load_from_cache(repo.removeprefix("hf-hub:"), "config.json",
                                        revision=revision or None)
        if not isinstance(cached, str):
            raise RuntimeError(f"{use}: {not_cached(name, use)}")


def load_hub_dataset(path: str, config: str | None = None):
    """``datasets.load_dataset`` of a Hub data set; not cached and not reachable says what to do."""
    import datasets

    try:
        return datasets.load_dataset(path, config)
    except (ConnectionError, FileNotFoundError) as e:
        which = f" (config '{config}')" if config else ""
        raise ConnectionError(f"could not load the data set '{path}'{which} from the Hub or the local "
                              f"cache ({e}).\n" + offline_weights_help(path, what="dataset")) from e

"""Talking to the Hugging Face Hub: knowing when it cannot be reached, and saying what to do."""

from __future__ import annotations

import os
import socket
import sys
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
    return (f"On a machine with internet, run: hf download {repo_id}{repo_type} --local-dir {folder}\n"
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

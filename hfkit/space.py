"""A live demo of a pushed model: ``hfkit push RUN --repo-id alice/ants --space alice/ants-demo``
creates or updates a Gradio Space that serves the demo of the model's task.

The Space folder is the repository's ``spaces/<name>/`` folder for that demo (its ``app.py``,
``requirements.txt`` and ``README.md`` with the Spaces header, and example images), with the
README linked to the model, plus hfkit itself as a ``hfkit/`` folder next to ``app.py``. The
Space's ``MODEL`` variable names the model repo.

hfkit is not on the package index, so the Space must carry it. It goes as the package's files,
not as a wheel named in requirements.txt: a Gradio Space installs its requirements with only
``requirements.txt`` mounted into that build step (``RUN --mount=target=requirements.txt,...
pip install -r requirements.txt``), so a ``./hfkit-0.1.0-py3-none-any.whl`` line would point at
a file that is not there yet. A folder next to ``app.py`` is importable as it is (Python puts the
script's folder first on ``sys.path``), needs no build step here, and is what ``app.py``
already imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hfkit.demo import DEMOS, REPO
from hfkit.hub import (
    _check_repo_id,
    _explain_push_errors,
    _known_tokens,
    _refuse_push_without_hub,
    _refuse_tokens,
)

SPACES = REPO / "spaces"  # in a repository checkout (hfkit is installed from one)
PACKAGE = Path(__file__).resolve().parent
# the folder of spaces/ that holds each demo's Space (tests check each app.py runs that demo)
SPACE_OF_DEMO = {"image": "image-classifier", "qa": "chinese-qa", "sentiment": "sentiment",
                 "generation": "text-generation"}
SPACE_FILES = ("app.py", "requirements.txt")  # copied as they are; README.md is adjusted
SPACE_FOLDERS = ("examples",)  # the image demo's example pictures
MODEL_VARIABLE = "MODEL"  # what spaces/*/app.py read (hfkit.demo.run_app)
ON_A_SPACE = "\n## On a Space\n"


def space_folder(model_repo_id: str, demo: str, to: str | os.PathLike) -> Path:
    """Write into ``to`` (new or empty) a complete Gradio Space serving ``demo`` (one of
    :data:`hfkit.demo.DEMOS`) for Hub model ``model_repo_id``; returns the folder."""
    if demo not in SPACE_OF_DEMO:
        raise ValueError(f"no Space for the demo {demo!r}: hfkit's demos are {', '.join(DEMOS)}")
    template = SPACES / SPACE_OF_DEMO[demo]
    if not (template / "app.py").is_file():
        raise FileNotFoundError(f"no Space folder {template}: hfkit writes Spaces from the spaces/ folder of "
                                "its repository, so install hfkit from a checkout (pip install -e .)")
    out = Path(to).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not an empty folder: choose a new one for the Space")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(template / name, out / name)
    for name in SPACE_FOLDERS:
        if (template / name).is_dir():
            shutil.copytree(template / name, out / name)
    readme = (template / "README.md").read_text(encoding="utf-8")
    (out / "README.md").write_text(space_readme(readme, model_repo_id), encoding="utf-8")
    copy_package(out / "hfkit")
    return out


def space_readme(template: str, model_repo_id: str) -> str:
    """The Space's README: the template's with the model in the header (the Hub links the two) and
    the "On a Space" section saying which model this Space serves."""
    if not template.startswith("---\n") or "\n---\n" not in template[4:]:
        raise ValueError("a Space README starts with its YAML header between --- lines")
    header, body = template[4:].split("\n---\n", 1)
    body = body.split(ON_A_SPACE, 1)[0].rstrip("\n")
    return (f"---\n{header}\nmodels:\n- {model_repo_id}\n---\n{body}\n{ON_A_SPACE}\n"
            f"This Space serves the model `{model_repo_id}`, named by its `{MODEL_VARIABLE}` variable "
            "(Settings → Variables and secrets). `hfkit push --space` wrote it; the `hfkit/` folder "
            "next to `app.py` is the hfkit the page runs.\n")


def copy_package(to: Path) -> list[str]:
    """Copy hfkit's own files (its modules, metrics scripts included) into ``to``; no caches."""
    names = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                   if "__pycache__" not in p.parts)
    for name in names:
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE / name, to / name)
    return names


def check_space_options(space_id: str, model_repo_id: str, revision: str | None = None,
                        create_pr: bool = False) -> None:
    """Refuse, before anything is pushed, a Space the model push could not back."""
    _check_repo_id(space_id, "--space")
    if revision not in (None, "main") or create_pr:
        raise ValueError(f"--space serves {model_repo_id} from its main branch, so it takes no --revision or "
                         "--create-pr: push to main, or push the Space once the change is merged")


def push_space(run_dir: str | os.PathLike, model_repo_id: str, space_id: str, private: bool = False,
               dry_run: str | os.PathLike | None = None) -> str:
    """Create or update Gradio Space ``space_id`` serving the demo of ``run_dir``'s task for the Hub model
    ``model_repo_id`` (its ``MODEL`` variable); returns the commit URL, or with ``dry_run`` the folder
    written (no server is contacted). ``private`` makes a new Space private."""
    from hfkit.results import read_result

    check_space_options(space_id, model_repo_id)
    demo = read_result(str(run_dir)).task.demo
    if dry_run is not None:
        out = space_folder(model_repo_id, demo, dry_run)
        print(f"Would create or update the Space {space_id} with {out}/ and set "
              f"{MODEL_VARIABLE}={model_repo_id}")
        return str(out)
    _refuse_push_without_hub(space_id)
    with tempfile.TemporaryDirectory(prefix="hfkit-space-") as tmp:
        staged = space_folder(model_repo_id, demo, Path(tmp) / "space")
        _refuse_tokens(staged, _known_tokens(), REPO)
        print(f"Uploading the {SPACE_OF_DEMO[demo]} Space to {space_id} ({MODEL_VARIABLE}={model_repo_id})")
        return _upload_space(staged, model_repo_id, space_id, private)


def _upload_space(staged: Path, model_repo_id: str, space_id: str, private: bool) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    with _explain_push_errors(space_id):
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        # before the upload, so that the build the upload starts already sees it
        api.add_space_variable(space_id, MODEL_VARIABLE, model_repo_id,
                               description="the model this demo serves (hfkit push --space)")
        commit = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=staged,
                                   # an hfkit module gone since the last push goes from the Space too
                                   delete_patterns=["hfkit/**"],
                                   commit_message=f"Demo of {model_repo_id} with hfkit push --space")
    return commit.commit_url


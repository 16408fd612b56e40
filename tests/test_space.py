"""hfkit push --space: the Space folder (hfkit/space.py), pushed to the local fake Hub, and the written
folder's app.py served on a free port with only the hfkit copy inside it importable."""
# ruff: noqa: F811  (pytest hands the imported fake_hub fixture to tests by that argument name)

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_image_run
from fakehub import FakeHub, fake_hub, set_offline  # noqa: F401

from hfkit.cli import main
from hfkit.demo import DEMOS
from hfkit.space import PACKAGE, SPACE_OF_DEMO, space_folder

TOKEN = "hf_fakeTokenForTests123"
SPACE_TOP = {"app.py", "README.md", "requirements.txt"}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return write_image_run(tmp_path_factory.mktemp("space-image"))


@pytest.fixture
def token(monkeypatch) -> str:
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # after fake_hub, which clears it
    return TOKEN


def package_files() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def header(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def space_files(hub: FakeHub, space_id: str) -> dict[str, bytes]:
    repo = hub.repo(space_id, "space")
    return dict(repo.commits[repo.resolve("main")])


# -- the folder -----------------------------------------------------------------------------------

@pytest.mark.parametrize("demo", DEMOS)
def test_space_folder_is_the_repository_space_with_hfkit_inside(demo, tmp_path):
    template = REPO / "spaces" / SPACE_OF_DEMO[demo]
    out = space_folder("alice/model", demo, tmp_path / "space")
    files = tree(out)
    assert f'run_app("{demo}"' in files["app.py"].decode()  # the demo of the model's task
    for name in ("app.py", "requirements.txt"):
        assert files[name] == (template / name).read_bytes(), name  # one copy, in spaces/
    readme = files["README.md"].decode()
    meta = header(readme)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == ["alice/model"]
    assert header((template / "README.md").read_text(encoding="utf-8")).items() <= meta.items()
    assert "This Space serves the model `alice/model`" in readme and "copy the repository" not in readme
    requirements = files["requirements.txt"].decode()
    assert "torch>=" in requirements and "copy the repository" not in requirements
    shipped = {n.removeprefix("hfkit/") for n in files if n.startswith("hfkit/")}
    assert shipped == package_files() and {"demo.py", "metrics/squad/squad.py"} <= shipped
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in files)
    examples = {n for n in files if n.startswith("examples/")}
    assert examples == ({"examples/ant.png", "examples/bee.png"} if demo == "image" else set())
    assert set(files) == SPACE_TOP | examples | {f"hfkit/{n}" for n in shipped}


def test_space_folder_refuses_an_unknown_demo_or_a_used_folder(tmp_path):
    with pytest.raises(ValueError, match="no Space for the demo 'speech'"):
        space_folder("alice/model", "speech", tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        space_folder("alice/model", "image", tmp_path / "b")


# -- pushing --------------------------------------------------------------------------------------

def test_push_with_space_creates_then_updates_the_space(fake_hub, image_run, token, capsys):
    assert main(["push", str(image_run), "--repo-id", "alice/ants", "--space", "alice/ants-demo"]) == 0
    assert fake_hub.repo("alice/ants") is not None  # the model went up first
    space = fake_hub.repo("alice/ants-demo", "space")
    assert space is not None and space.repo_type == "space" and space.sdk == "gradio"
    assert space.variables["MODEL"]["value"] == "alice/ants"
    files = space_files(fake_hub, "alice/ants-demo")
    files.pop(".gitattributes")
    shipped = {n.removeprefix("hfkit/") for n in files if n.startswith("hfkit/")}
    assert shipped == package_files()
    examples = {"examples/ant.png", "examples/bee.png"}
    assert set(files) == SPACE_TOP | examples | {f"hfkit/{n}" for n in shipped}
    assert files["hfkit/space.py"] == (PACKAGE / "space.py").read_bytes()
    meta = header(files["README.md"].decode())
    assert meta["sdk"] == "gradio" and meta["models"] == ["alice/ants"]
    assert 'run_app("image"' in files["app.py"].decode()
    assert not any(TOKEN.encode() in content for content in files.values())
    out = capsys.readouterr().out
    assert "Pushed the Space alice/ants-demo: " in out and "MODEL=alice/ants" in out

    # an update: a module gone from hfkit goes from the Space too; the variable follows --repo-id
    fake_hub.commit("alice/ants-demo", {"hfkit/gone.py": b"# an old module\n"}, repo_type="space")
    assert main(["push", str(image_run), "--repo-id", "alice/ants2", "--space", "alice/ants-demo"]) == 0
    files = space_files(fake_hub, "alice/ants-demo")
    assert "hfkit/gone.py" not in files and "hfkit/demo.py" in files
    assert space.variables["MODEL"]["value"] == "alice/ants2"
    assert header(files["README.md"].decode())["models"] == ["alice/ants2"]


def test_space_options_are_checked_before_anything_is_pushed(fake_hub, image_run, token, capsys):
    assert main(["push", str(image_run), "--repo-id", "alice/ants", "--space", "ants-demo"]) == 2
    assert "--space 'ants-demo' needs its owner" in capsys.readouterr().err
    assert main(["push", str(image_run), "--repo-id", "alice/ants", "--space", "alice/ants-demo",
                 "--revision", "v2"]) == 2
    assert "main branch" in capsys.readouterr().err
    assert fake_hub.repos == {}


def test_dry_run_with_space_writes_the_space_folder_and_sends_nothing(fake_hub, image_run, token,
                                                                      tmp_path, monkeypatch, capsys):
    set_offline(monkeypatch, True)
    dry = tmp_path / "dry"
    for _ in range(2):  # an earlier dry run, Space included, is replaced
        assert main(["push", str(image_run), "--repo-id", "alice/ants", "--space", "alice/ants-demo",
                     "--dry-run", str(dry)]) == 0
    assert fake_hub.requests == []
    assert (dry / "README.md").is_file() and (dry / "model.safetensors").is_file()  # the model, as before
    assert SPACE_TOP <= set(tree(dry / "space")) and (dry / "space" / "hfkit" / "demo.py").is_file()
    assert header((dry / "space" / "README.md").read_text(encoding="utf-8"))["models"] == ["alice/ants"]
    out = capsys.readouterr().out
    assert "set MODEL=alice/ants" in out and f"{dry / 'space'}/ is the Space folder" in out


# -- the written Space, served --------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _space_env(space: Path, **extra: str) -> dict[str, str]:
    """The environment of a Space run: the folder itself is all that is on PYTHONPATH, offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL")}
    return {**env, "PYTHONPATH": str(space), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}


def test_written_space_serves_the_page_with_its_own_hfkit(image_run, tmp_path):
    import httpx

    space = space_folder("alice/ants", "image", tmp_path / "space")
    found = subprocess.run([sys.executable, "-c", "import hfkit; print(hfkit.__file__)"], cwd=space,
                           env=_space_env(space), capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == space / "hfkit" / "__init__.py"  # not the repository's hfkit

    port = _free_port()
    env = _space_env(space, MODEL=str(image_run), GRADIO_SERVER_NAME="127.0.0.1",
                     GRADIO_SERVER_PORT=str(port))
    log = tmp_path / "space.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        answer = _wait_for_page(f"http://127.0.0.1:{port}/", app, log, httpx)
        assert answer.status_code == 200 and "<html" in answer.text.lower()
    finally:
        app.terminate()
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


def _wait_for_page(url: str, app: subprocess.Popen, log: Path, httpx, timeout: float = 180):
    """The page's first answer; fails with the app's output if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"app.py exited with {app.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(url, timeout=5, trust_env=False)
        except httpx.TransportError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer {url} in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")

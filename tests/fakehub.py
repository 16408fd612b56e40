"""An in-memory stand-in for the Hugging Face Hub, so that Hub code is tested without the network.

``FakeHub`` serves, on 127.0.0.1, the part of the Hub's HTTP API that huggingface_hub 2.x calls for:

- repo_info / model_info / dataset_info: GET /api/{models|datasets|spaces}/{repo_id}[/revision/{rev}]
- list_repo_tree / list_repo_files:      GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]?recursive=
- hf_hub_download / snapshot_download:   HEAD and GET /[{datasets|spaces}/]{repo_id}/resolve/{rev}/{path}
- create_repo:                           POST /api/repos/create (``private`` and a Space's ``sdk`` are kept
  on the repo)
- add_space_variable:                    POST /api/spaces/{repo_id}/variables (kept in ``repo.variables``)
- create_branch:                         POST /api/{type}s/{repo_id}/branch/{branch}
- create_commit / upload_folder:         POST /api/{type}s/{repo_id}/preupload/{rev} and .../commit/{rev}
  (every file is answered "regular": its bytes travel inside the commit, so no LFS or Xet storage is needed;
  ``?create_pr=1`` opens a pull request: a ``refs/pr/N`` branch from ``rev``, listed in ``repo.pulls``)
- create_pull_request:                   POST /api/{type}s/{repo_id}/discussions (a ``refs/pr/N`` branch from
  main) and GET .../discussions/{num}, which the client reads back
- README.md checks on upload:            POST /api/validate-yaml (a few of the Hub's metadata rules)

Errors carry the X-Error-Code headers from which the client builds RepositoryNotFoundError,
GatedRepoError, RevisionNotFoundError and RemoteEntryNotFoundError. Another endpoint is one more
line in ``_Handler.ROUTES`` and one method. ``hub.requests`` records (method, path) of every call,
``hub.authorizations`` their Authorization headers, ``hub.validated`` the READMEs checked; ``hub.fail_next``
makes the next matching calls fail (with a server error, say).

The ``fake_hub`` fixture starts one per test and points huggingface_hub at it (see ``use_hub``).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# Files the Hub keeps in LFS: the patterns of its default .gitattributes. Their ETag is the sha256 of
# the content, and they come with X-Linked-* headers, as on the real Hub.
LFS_PATTERNS = ("*.bin", "*.safetensors", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pt", "*.pth", "*.ckpt",
                "*.model", "*.pkl", "*.npy", "*.npz", "*.parquet", "*.arrow", "*.zip", "*.gz", "*.tar",
                "*.tflite", "*.mlmodel", "*.joblib", "*.wasm", "*.zst", "*.xz", "*.7z")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def is_lfs(path: str) -> bool:
    return any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    gated: bool = False
    private: bool = False
    sdk: str | None = None  # a Space's, as create_repo sent it
    variables: dict[str, dict] = field(default_factory=dict)  # a Space's: key -> {"value", "description"}
    pulls: dict[int, str] = field(default_factory=dict)  # pull request number -> the branch it targets
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files at that commit
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    messages: dict[str, str] = field(default_factory=dict)  # commit sha -> commit message

    def resolve(self, revision: str) -> str | None:
        """A branch or a full commit sha -> the commit sha; None if there is no such revision."""
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class FakeHub:
    """Repos held in memory, served over HTTP while started (``with FakeHub() as hub:``)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.validated: list[str] = []  # README.md contents sent to /api/validate-yaml
        self.failures: list[tuple[str, str, int]] = []  # (method, path regex, status), each used once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving

    @property
    def url(self) -> str:
        assert self._server is not None, "start the FakeHub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_next(self, method: str, path_pattern: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` ``method`` requests whose path matches ``path_pattern`` (re.search)
        with ``status``. The client retries 408, 429 and 5xx answers itself (5 times, backing off from 1 s):
        a failure it gives up on takes ``times=6``."""
        self.failures += [(method, path_pattern, status)] * times

    def _take_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for i, (m, pattern, status) in enumerate(self.failures):
                if m == method and re.search(pattern, path):
                    del self.failures[i]
                    return status
        return None

    # -- content

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo | None:
        return self.repos.get((repo_type, repo_id))

    def add_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                 gated: bool = False) -> str:
        """Create (or replace) a repo whose main branch holds ``files``; returns the commit sha."""
        with self._lock:
            self.repos[(repo_type, repo_id)] = FakeRepo(repo_id, repo_type, gated=gated)
        return self.commit(repo_id, files, repo_type=repo_type, message="initial commit")

    def commit(self, repo_id: str, add: dict[str, bytes] | None = None, delete: tuple[str, ...] = (),
               repo_type: str = "model", branch: str = "main", message: str = "") -> str:
        """Commit on ``branch``: files added or replaced, files or folders (ending in /) deleted."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            parent = repo.branches.get(branch)
            files = dict(repo.commits[parent]) if parent else {}
            for gone in delete:  # a file, or a folder with all below it
                folder = gone.rstrip("/") + "/"
                files = {p: c for p, c in files.items() if p != gone and not p.startswith(folder)}
            files.update(add or {})
            digest = hashlib.sha1(f"{parent}\n{message}\n".encode())
            for path in sorted(files):
                digest.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
            sha = digest.hexdigest()
            repo.commits[sha] = files
            repo.messages[sha] = message
            repo.branches[branch] = sha
            return sha

    def url_of(self, repo: FakeRepo) -> str:
        return f"{self.url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"


_TYPE = r"(?P<type>models|datasets|spaces)"
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "namespace/name"
_RESOLVE = rf"/(?:(?P<prefix>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"


class _Error(Exception):
    """An HTTP error answer, raised anywhere in a handler method."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers, self.extra = status, code, headers or {}, extra or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a Content-Length

    ROUTES = [  # (method, path regex, handler method); the first full match wins
        ("GET", rf"/api/{_TYPE}/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"/api/{_TYPE}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("HEAD", _RESOLVE, "resolve"),
        ("GET", _RESOLVE, "resolve"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", rf"/api/{_TYPE}/{_REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
        ("POST", rf"/api/{_TYPE}/{_REPO}/discussions", "create_discussion"),
        ("GET", rf"/api/{_TYPE}/{_REPO}/discussions/(?P<num>\d+)", "discussion"),
        ("POST", rf"/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/api/spaces/{_REPO}/variables", "add_space_variable"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),  # asked while building request headers
    ]

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def log_message(self, *args) -> None:  # keep test output clean; hub.requests has the calls
        pass

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.hub.requests.append((self.command, unquote(url.path)))
        self.hub.authorizations.append(self.headers.get("Authorization"))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.hub._take_failure(self.command, unquote(url.path))
        if status is not None:
            message = f"fake hub: failing {self.command} {url.path} on request"
            self._json({"error": message}, status, {"X-Error-Message": message})
            return
        for method, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, url.path)
            if method == self.command and match:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                try:
                    getattr(self, name)(body=body, **args)
                except _Error as e:
                    headers = {"X-Error-Message": str(e), **({"X-Error-Code": e.code} if e.code else {})}
                    self._json({"error": str(e), **e.extra}, e.status, {**headers, **e.headers})
                return
        self._json({"error": f"fake hub: no route for {self.command} {url.path}"}, 404)

    # -- answering

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _repo(self, repo_type: str, repo_id: str) -> FakeRepo:
        repo = self.hub.repo(repo_id, repo_type)
        if repo is None:
            raise _Error(404, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: FakeRepo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _Error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    # -- reading

    def repo_info(self, body: bytes, type: str, repo: str, rev: str = "main") -> None:
        r = self._repo(REPO_TYPES[type], repo)
        sha = self._commit(r, rev)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._json({"_id": sha[:24], "id": r.repo_id, "sha": sha, "private": r.private,
                    "gated": "auto" if r.gated else False, "disabled": False, "lastModified": now,
                    "createdAt": now, "tags": [], "downloads": 0, "likes": 0,
                    "siblings": [{"rfilename": p} for p in sorted(r.commits[sha])]})

    def tree(self, body: bytes, type: str, repo: str, rev: str, path: str = "") -> None:
        r = self._repo(REPO_TYPES[type], repo)
        files = r.commits[self._commit(r, rev)]
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        folders, entries = set(), []
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)  # folders on the way to it
            folders.update(prefix + "/".join(parts[:i]) for i in range(1, depth + 1))
            if recursive or len(parts) == 1:
                entries.append(_tree_file(name, files[name]))
        if prefix and not (folders or entries):
            raise _Error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        folder_entries = [{"type": "directory", "path": f, "size": 0, "oid": git_blob_sha1(f.encode())}
                          for f in sorted(folders)]
        self._json(folder_entries + entries)  # one page: no Link header, so the client asks no further

    def resolve(self, body: bytes, repo: str, rev: str, path: str, prefix: str = "") -> None:
        r = self._repo(REPO_TYPES[prefix or "models"], repo)
        sha = self._commit(r, rev)
        if r.gated:
            raise _Error(401, "GatedRepo", f"Access to {r.repo_id} is restricted: you must be authenticated "
                         "and have accepted its conditions.")
        if path not in r.commits[sha]:
            raise _Error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        content = r.commits[sha][path]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if is_lfs(path):
            digest = hashlib.sha256(content).hexdigest()
            headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                            "X-Linked-Size": str(len(content))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(content)}"'
        status, part = _byte_range(self.headers.get("Range"), content, headers)
        self._send(status, part, headers, content_type="application/octet-stream")

    # -- writing

    def create_repo(self, body: bytes) -> None:
        data = json.loads(body or b"{}")
        repo_type = data.get("type") or "model"
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
        existing = self.hub.repo(repo_id, repo_type)
        if existing is not None:
            url = self.hub.url_of(existing)  # the client reads it from the body, as on the Hub
            raise _Error(409, None, f"You already created this {repo_type} repo", {"X-Repo-Url": url},
                         {"url": url})
        if repo_type == "space" and not data.get("sdk"):
            raise _Error(400, None, "a Space needs an sdk (gradio, docker or static)")
        self.hub.add_repo(repo_id, {".gitattributes": GITATTRIBUTES}, repo_type=repo_type)
        private = bool(data.get("private")) or data.get("visibility") == "private"  # 1.x sent "private"
        self.hub.repo(repo_id, repo_type).private = private
        self.hub.repo(repo_id, repo_type).sdk = data.get("sdk")
        url = self.hub.url_of(self.hub.repo(repo_id, repo_type))
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def create_branch(self, body: bytes, type: str, repo: str, branch: str) -> None:
        r = self._repo(REPO_TYPES[type], repo)
        if branch in r.branches:
            raise _Error(409, None, f"Reference refs/heads/{branch} already exists")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        with self.hub._lock:
            r.branches[branch] = self._commit(r, start)
        self._json({})

    def create_discussion(self, body: bytes, type: str, repo: str) -> None:
        r = self._repo(REPO_TYPES[type], repo)
        data = json.loads(body)
        if not data.get("pullRequest"):
            raise _Error(501, None, "the fake hub opens pull requests only, not discussions")
        with self.hub._lock:
            num = max(r.pulls, default=0) + 1
            r.pulls[num] = "main"
            r.branches[f"refs/pr/{num}"] = r.branches["main"]
        self._json({"num": num, "pullRequest": True, "url": f"{self.hub.url_of(r)}/discussions/{num}"})

    def discussion(self, body: bytes, type: str, repo: str, num: str) -> None:
        r = self._repo(REPO_TYPES[type], repo)
        if int(num) not in r.pulls:
            raise _Error(404, None, f"Discussion {num} not found")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._json({"num": int(num), "title": f"pull request {num}", "status": "draft", "createdAt": now,
                    "author": {"name": "fake"}, "repo": {"name": r.repo_id, "type": r.repo_type},
                    "isPullRequest": True, "events": [], "filesWithConflicts": [],
                    "changes": {"base": f"refs/heads/{r.pulls[int(num)]}"}})

    def preupload(self, body: bytes, type: str, repo: str, rev: str) -> None:
        r = self._repo(REPO_TYPES[type], repo)
        files = r.commits[self._commit(r, rev)]
        asked = json.loads(body)["files"]
        self._json({"commitOid": r.resolve(rev), "files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None} for f in asked]})

    def commit(self, body: bytes, type: str, repo: str, rev: str) -> None:
        r = self._repo(REPO_TYPES[type], repo)
        head = self._commit(r, rev)
        if rev not in r.branches:
            raise _Error(400, None, f"Invalid rev id: {rev} is not a branch")
        pull = None
        if self.query.get("create_pr"):  # the commit goes onto a new refs/pr/N branch made from rev
            with self.hub._lock:
                pull = max(r.pulls, default=0) + 1
                r.pulls[pull] = rev
                rev = f"refs/pr/{pull}"
                r.branches[rev] = head
        add, delete, message = {}, [], ""
        for line in filter(None, body.splitlines()):
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value["summary"]
                if value.get("parentCommit") and not head.startswith(value["parentCommit"]):
                    raise _Error(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                add[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                delete.append(value["path"] + ("/" if key == "deletedFolder" else ""))
            else:  # lfsFile: never asked for, since preupload answers "regular" for every file
                raise _Error(422, None, f"the fake hub takes no {key} operations")
        sha = self.hub.commit(r.repo_id, add, tuple(delete), r.repo_type, rev, message)
        self._json({"success": True, "commitOid": sha, "commitMessage": message, "hookOutput": "",
                    "commitUrl": f"{self.hub.url_of(r)}/commit/{sha}",
                    "pullRequestUrl": f"{self.hub.url_of(r)}/discussions/{pull}" if pull else None})

    def add_space_variable(self, body: bytes, repo: str) -> None:
        r = self._repo("space", repo)
        data = json.loads(body)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        with self.hub._lock:
            r.variables[data["key"]] = {"value": data["value"], "description": data.get("description"),
                                        "updatedAt": now}
        self._json(r.variables)  # the client reads back every variable of the Space

    def validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        self.hub.validated.append(content)
        errors = [{"message": m} for m in readme_metadata_errors(content)]
        self._json({"errors": errors, "warnings": []}, 400 if errors else 200)

    def agent_harnesses(self, body: bytes) -> None:
        self._json({"standardEnvVars": [], "harnesses": {}})


PIPELINE_TAGS = {"image-classification", "text-classification", "question-answering", "text-generation",
                 "token-classification", "fill-mask", "feature-extraction", "translation", "summarization"}


def readme_metadata_errors(content: str) -> list[str]:
    """Some of the Hub's rules for a model card's YAML front matter: it parses to a mapping, the usual
    fields have their types, and every model-index result has a task type, a dataset (type and name)
    and metrics with a type and a value."""
    import yaml

    match = re.match(r"---\r?\n(.*?)\r?\n---(\r?\n|$)", content, re.DOTALL)
    if not match:
        return []  # no metadata is allowed (the Hub warns)
    try:
        meta = yaml.safe_load(match[1])
    except yaml.YAMLError as e:
        return [f"YAML does not parse: {e}"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = []
    for key in ("license", "library_name", "pipeline_tag"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    if meta.get("pipeline_tag") and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" {meta["pipeline_tag"]!r} is not a known pipeline tag')
    for key in ("base_model", "datasets", "tags", "metrics", "language"):
        value = meta.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            errors.append(f'"{key}" must be a string or a list of strings')
    for model in meta.get("model-index") or []:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append('"model-index" entries need a "name"')
            continue
        for result in model.get("results") or []:
            task, dataset = result.get("task") or {}, result.get("dataset") or {}
            if not isinstance(task.get("type"), str):
                errors.append('"model-index[].results[].task.type" is required')
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append('"model-index[].results[].dataset" needs "type" and "name"')
            for metric in result.get("metrics") or []:
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append('"model-index[].results[].metrics[]" need "type" and "value"')
    return errors


def _tree_file(path: str, content: bytes) -> dict:
    entry = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
    if is_lfs(path):  # as on the Hub: the git blob is the LFS pointer file, the content is named by sha256
        digest = hashlib.sha256(content).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(content)}\n"
        entry["oid"] = git_blob_sha1(pointer.encode())
        entry["lfs"] = {"oid": digest, "size": len(content), "pointerSize": len(pointer)}
    return entry


def _byte_range(header: str | None, content: bytes, headers: dict) -> tuple[int, bytes]:
    """Answer ``Range: bytes=a-[b]`` (what the client sends to resume a download) with 206 and that part."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if not match:
        return 200, content
    start, end = int(match[1]), int(match[2]) if match[2] else len(content) - 1
    headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
    return 206, content[start:end + 1]


# ---------------------------------------------------------------------------------------------
# Pointing huggingface_hub at a hub for one test

def use_hub(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Point huggingface_hub (and datasets, if imported) at ``endpoint``, online, with its files in ``home``.

    The environment alone is not enough: huggingface_hub (and datasets) read HF_ENDPOINT,
    HF_HUB_OFFLINE and HF_HOME into module constants at import, so those are patched too.
    monkeypatch undoes all of it after the test.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    # A proxy from the environment must not carry requests to 127.0.0.1.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    _rehome(monkeypatch, constants, constants.HF_HOME, str(home))  # caches, token, xet, agent registry ...
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    # hf_api's module functions (file_exists, list_repo_files, ...: what peft calls) are methods of
    # one HfApi made at import, with the endpoint of that moment
    from huggingface_hub import hf_api

    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    if "huggingface_hub.utils._cache_manager" in sys.modules:  # took HF_HUB_CACHE by value
        monkeypatch.setattr(sys.modules["huggingface_hub.utils._cache_manager"], "HF_HUB_CACHE",
                            str(home / "hub"))
    if "datasets.config" in sys.modules:
        config = sys.modules["datasets.config"]
        _rehome(monkeypatch, config, config.HF_CACHE_HOME, str(home))
        monkeypatch.setattr(config, "HF_ENDPOINT", endpoint)
        monkeypatch.setattr(config, "HUB_DATASETS_URL",
                            endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    set_offline(monkeypatch, False)
    _http.close_session()  # the next request builds a client that sees the settings above


def set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    """Turn huggingface_hub's offline mode on or off, in the environment and in its import-time constants."""
    from huggingface_hub import constants

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    if "datasets.config" in sys.modules:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.setattr(sys.modules["datasets.config"], name, offline)


def _rehome(monkeypatch: pytest.MonkeyPatch, module, old: str, new: str) -> None:
    """Move every path constant of ``module`` that lies under ``old`` to the same place under ``new``."""
    for name, value in list(vars(module).items()):
        if name.isupper() and isinstance(value, str) and (value == old or value.startswith(old + "/")):
            monkeypatch.setattr(module, name, new + value[len(old):])


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A started FakeHub that huggingface_hub talks to, online, for this test only (conftest keeps the
    rest of the suite offline); the Hugging Face cache lives in tmp_path."""
    from huggingface_hub.utils import _http

    with FakeHub() as hub:
        use_hub(monkeypatch, hub.url, tmp_path / "hf-home")
        yield hub
    _http.close_session()  # drop pooled connections to the stopped server

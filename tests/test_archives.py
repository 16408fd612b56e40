"""A data set's archive is unpacked whole or not at all, once per version of the file, and nothing
it holds lands outside its folder (hfkit.data.archives)."""

from __future__ import annotations

import errno
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import datasets
import pytest
from conftest import write_image_folder

from hfkit.data import archives
from hfkit.data.sources import load_splits
from hfkit.diskspace import DiskFullError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / archives.FOLDER


def _tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _copies(cache: Path) -> list[Path]:
    """The folders under hfkit-unpacked/: whole copies and part copies."""
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []


def _sizes(splits: datasets.DatasetDict) -> dict[str, int]:
    return {name: len(split) for name, split in splits.items()}


def test_a_damaged_archive_is_refused_on_every_run_not_read_in_part(tmp_path, cache):
    # datasets unpacked in place and took the part folder left by a failed run for the data set
    images = write_image_folder(tmp_path / "images", {"train": 30, "val": 6})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])  # a download cut short
    for _ in range(2):
        with pytest.raises(ValueError, match="images.tar.gz is damaged or ends early.*download it again"):
            load_splits(str(archive))
        assert not _copies(cache), "a part copy was left behind"
    archive.write_bytes(whole)  # downloaded again, under the same name
    assert _sizes(load_splits(str(archive))) == {"train": 60, "validation": 12}


def test_a_run_stopped_while_unpacking_leaves_no_part_copy(tmp_path, cache, monkeypatch):
    images = write_image_folder(tmp_path / "images", {"train": 30, "val": 6})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")

    class Interrupted(archives.tqdm):
        def update(self, n=1):
            if self.n:  # after the first member: Ctrl-C
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(archives, "tqdm", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_splits(str(archive))
    assert not _copies(cache)
    monkeypatch.undo()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    assert _sizes(load_splits(str(archive))) == {"train": 60, "validation": 12}


def _zip_of(folder: Path, archive: Path, mtime: int) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*.jpg")):
            zf.write(file, file.relative_to(folder.parent))
    os.utime(archive, ns=(mtime * 10**9, mtime * 10**9))  # a new version, whatever the clock says
    return archive


# Another process (another run) that unpacks ARCHIVE (argv[1]) and prints what it got as JSON.
# argv[2] "pause": half-way through, it writes OUT/paused and waits for OUT/go.
# argv[2] "plain": it writes OUT/calling just before, and says whether it unpacked itself.
WORKER = r"""
import json, sys, time
from pathlib import Path
from hfkit.data import archives, sources
archive, mode, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
unpacked = []
if mode == "pause":
    class Paused(archives.tqdm):
        def update(self, n=1):
            if self.n > self.total / 2 and not unpacked:  # half of it unpacked
                unpacked.append(1)
                (out / "paused").touch()
                while not (out / "go").exists():
                    time.sleep(0.05)
            return super().update(n)
    archives.tqdm = Paused
else:
    unpack_into = archives._unpack_into
    archives._unpack_into = lambda *a: unpacked.append(1) or unpack_into(*a)
    (out / "calling").touch()
folder = sources.extract_archive(archive)
train = sources.load_splits(str(archive))["train"]
print(json.dumps({"folder": str(folder), "train": len(train), "unpacked": bool(unpacked)}))
"""


def _worker(archive: Path, mode: str, out: Path) -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "HF_DATASETS_CACHE": datasets.config.HF_DATASETS_CACHE}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(archive), mode, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {marker.name} in 120 s"
        time.sleep(0.05)


def _result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1])


def test_an_archive_replaced_under_the_same_name_gives_its_own_data(tmp_path, cache):
    # datasets keyed its extraction on the archive's path alone and gave the old data
    archive = _zip_of(write_image_folder(tmp_path / "v1" / "images", {"train": 8, "val": 2}),
                      tmp_path / "images.zip", mtime=1)
    assert _result(_worker(archive, "plain", tmp_path / "run1"))["train"] == 16  # an earlier run
    _zip_of(write_image_folder(tmp_path / "v2" / "images", {"train": 5, "val": 2}), archive, mtime=2)
    assert _sizes(load_splits(str(archive)))["train"] == 10
    assert len(_copies(cache)) == 1, "the copy of the replaced archive, which no run reads, stays on disk"


def test_the_copy_a_run_reads_stays_while_a_newer_archive_unpacks(tmp_path, cache):
    archive = _zip_of(write_image_folder(tmp_path / "v1" / "images", {"train": 8, "val": 2}),
                      tmp_path / "images.zip", mtime=1)
    reading = load_splits(str(archive))["train"]  # this run reads its images from the copy
    _zip_of(write_image_folder(tmp_path / "v2" / "images", {"train": 5, "val": 2}), archive, mtime=2)
    assert _result(_worker(archive, "plain", tmp_path / "run2"))["train"] == 10
    assert len(_copies(cache)) == 2
    assert [row["image"].size for row in reading] == [(40, 32)] * 16  # every image still there


def test_a_run_killed_while_unpacking_leaves_no_copy_that_a_later_run_takes(tmp_path, cache):
    images = write_image_folder(tmp_path / "images", {"train": 30, "val": 6})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")
    killed = _worker(archive, "pause", tmp_path / "run1")
    _wait_for(tmp_path / "run1" / "paused", killed)
    assert any(p.is_file() for p in _copies(cache)[0].rglob("*"))  # part of it is on disk
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert _sizes(load_splits(str(archive))) == {"train": 60, "validation": 12}
    assert len(_copies(cache)) == 1


def test_processes_of_one_run_wait_for_the_one_that_unpacks(tmp_path, cache):
    images = write_image_folder(tmp_path / "images", {"train": 30, "val": 6})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")
    first = _worker(archive, "pause", tmp_path / "first")
    _wait_for(tmp_path / "first" / "paused", first)
    second = _worker(archive, "plain", tmp_path / "second")
    _wait_for(tmp_path / "second" / "calling", second)
    time.sleep(1.0)
    assert second.poll() is None, "it went on while the first process was unpacking"
    (tmp_path / "first" / "go").touch()
    a, b = _result(first), _result(second)
    assert a["unpacked"] and not b["unpacked"]
    assert a["folder"] == b["folder"] and a["train"] == b["train"] == 60


def test_an_archive_is_unpacked_once(tmp_path, cache, monkeypatch):
    images = write_image_folder(tmp_path / "images", {"train": 4, "val": 2})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")
    first = load_splits(str(archive))
    monkeypatch.setattr(archives, "_unpack_into", lambda *a: pytest.fail("unpacked a second time"))
    assert _sizes(load_splits(str(archive))) == _sizes(first)


def test_zip_members_that_climb_out_stay_inside_the_folder(tmp_path, cache):
    outside = tmp_path / "escaped.txt"
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escaped.txt", "from the archive")
        zf.writestr(str(outside), "from the archive")  # an absolute name
    folder = archives.unpack(archive, str(archive), cache.parent)
    assert not outside.exists()
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["escaped.txt", "escaped.txt"]
    assert all(p.resolve().is_relative_to(folder) for p in folder.rglob("*"))


def test_a_file_named_like_an_archive_that_is_not_one_says_so(tmp_path, cache):
    archive = tmp_path / "images.zip"
    archive.write_text("<html>Not Found</html>")  # what a wrong URL saves
    with pytest.raises(ValueError, match="neither a zip nor a tar file"):
        load_splits(str(archive))


def test_an_empty_archive_says_so(tmp_path, cache):
    archive = tmp_path / "images.zip"
    zipfile.ZipFile(archive, "w").close()
    with pytest.raises(ValueError, match="images.zip holds no files"):
        load_splits(str(archive))


def test_a_full_disk_while_unpacking_says_so_and_gives_the_space_back(tmp_path, cache, monkeypatch):
    images = write_image_folder(tmp_path / "images", {"train": 6, "val": 2})
    archive = _tar_gz(images, tmp_path / "images.tar.gz")
    written = []
    copy = tarfile.copyfileobj

    def fills_up(src, dst, length=None, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(length)
        return copy(src, dst, length, *args, **kwargs)

    monkeypatch.setattr(tarfile, "copyfileobj", fills_up)
    with pytest.raises(DiskFullError, match="disk filled while unpacking .*images.tar.gz.*HF_DATASETS_CACHE"):
        load_splits(str(archive))
    assert written and not _copies(cache)


def test_a_tar_that_ends_with_a_zip_is_read_as_the_tar(tmp_path, cache):
    # zipfile's test reads from the end of a file, where this tar holds a whole zip
    images = write_image_folder(tmp_path / "images", {"train": 3, "val": 1})
    inner = tmp_path / "extra.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("notes.txt", "not the data set")
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(images, arcname="images")
        tar.add(inner, arcname="images/extra.zip")
    assert zipfile.is_zipfile(archive)
    assert _sizes(load_splits(str(archive))) == {"train": 6, "validation": 2}


def test_a_plain_tar_cut_between_two_members_is_refused(tmp_path, cache):
    # tarfile takes the end of the file for the end of the archive: a shorter data set, silently
    images = write_image_folder(tmp_path / "images", {"train": 6, "val": 2})
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(images, arcname="images")
    with tarfile.open(archive) as tar:
        cut = tar.getmembers()[8].offset  # a member's header: what comes before it is whole
    archive.write_bytes(archive.read_bytes()[:cut])
    with pytest.raises(ValueError, match="images.tar is damaged or ends early .*end-of-archive"):
        load_splits(str(archive))
    assert not _copies(cache)


def test_a_url_that_gives_no_archive_says_what_to_do(tmp_path, cache, monkeypatch):
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "data").write_text("<html>a login page</html>")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data"
    try:
        with pytest.raises(ValueError, match=f"{url} is not a zip or tar archive: download it by hand"):
            load_splits(url)
    finally:
        server.shutdown()
        server.server_close()

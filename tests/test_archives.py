"""A data set's archive is unpacked whole or not at all, once per version of the file, and nothing
it holds lands outside its folder (hfkit.data.archives)."""

from __future__ import annotations

import errno
import os
import tarfile
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
        assert not any(cache.glob("*-*")), "a part copy was left behind"
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
    assert not any(cache.glob("*-*"))
    monkeypatch.undo()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    assert _sizes(load_splits(str(archive))) == {"train": 60, "validation": 12}


def test_an_archive_replaced_under_the_same_name_gives_its_own_data(tmp_path, cache):
    # datasets keyed its extraction on the archive's path alone and gave the old data
    archive = tmp_path / "images.zip"
    for per_class in (8, 5):
        images = write_image_folder(tmp_path / f"v{per_class}" / "images", {"train": per_class, "val": 2})
        with zipfile.ZipFile(archive, "w") as zf:
            for file in sorted(images.rglob("*.jpg")):
                zf.write(file, file.relative_to(images.parent))
        os.utime(archive, ns=(per_class * 10**9, per_class * 10**9))  # a new file, whatever the clock
        assert _sizes(load_splits(str(archive)))["train"] == 2 * per_class
    assert len(list(cache.glob("*-*"))) == 1, "the copy of the replaced archive stays on disk"


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
    assert written and not any(cache.glob("*-*"))

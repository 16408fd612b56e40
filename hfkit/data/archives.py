"""A data set's archive (.zip, .tar, .tar.gz, ...) unpacked once, safely and whole.

datasets' own extraction (``DownloadManager.extract``) is not used for these, for three reasons:

- it unpacks in place and takes any non-empty folder for a finished extraction, so a run stopped
  while unpacking (Ctrl-C, a full disk, a killed job) left a part of the data set that every
  later run trained on without a word;
- its cache is keyed on the archive's path alone: a new archive saved over the old one under the
  same name gave the old data;
- its tar check judges a hard link from the link's own folder while tarfile makes the link from
  the extraction root, so hfkit had to read a whole ``.tar.gz`` once more to judge it first
  (0.9 s on a 16.5 MB Tiny ImageNet subset, +55-60% on its unpacking).

Here one pass both judges and unpacks each member (Python's own ``"data"`` filter: nothing
outside the folder, no absolute or escaping links, no device files), into a folder named after
the archive's path, size and modification time, renamed into place only once it is complete. A
lock lets one process of a multi-process run unpack while the others wait. Every process that
uses a copy holds a shared lock on its ``.in-use`` file, so the copy of an archive's earlier
version is removed (when a newer one unpacks) only once no run reads from it any more.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from hfkit.diskspace import DiskFullError, free_bytes, human_bytes, says_disk_full

__all__ = ["is_archive", "unpack"]

FOLDER = "hfkit-unpacked"  # under datasets' cache (HF_DATASETS_CACHE)

_held: dict[str, object] = {}  # copy -> its open .in-use file, locked while this process lives


def is_archive(path: Path) -> bool:
    """A zip or a tar (compressed or not), judged by its content: downloads have no suffix."""
    return path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))


def unpack(archive: Path, source: str, cache: Path) -> Path:
    """The folder that ``archive`` unpacks into, under ``cache``: unpacked now unless an earlier
    run unpacked this same file (path, size and time) already. ``source`` names it in errors (a
    URL for a download). Copies of this path's earlier versions go once no run reads them."""
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("unpacking an archive safely needs Python 3.10.12 or 3.11.4 or newer (tarfile's "
                           "data filter): upgrade Python, or unpack it by hand and pass the folder")
    archive = archive.resolve()
    stat = archive.stat()
    name = _digest(str(archive))
    target = cache / FOLDER / f"{name}-{_digest(f'{stat.st_size}:{stat.st_mtime_ns}')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    _hold(target)  # before looking: a run cleaning up after a newer version now leaves it be
    if target.is_dir():
        return target
    with FileLock(str(target.parent / f"{name}.lock")):
        if target.is_dir():  # another process of this run unpacked it while this one waited
            return target
        _remove_others(target, name)
        partial = target.with_name(target.name + ".partial")
        try:
            _unpack_into(archive, partial, source)
        except BaseException as e:  # Ctrl-C too: no part copy stays behind
            shutil.rmtree(partial, ignore_errors=True)
            raise _explained(e, source, cache) from e
        if not any(p.is_file() for p in partial.rglob("*")):
            shutil.rmtree(partial)
            raise ValueError(f"{source} holds no files: is it the data set's archive?")
        partial.rename(target)
    return target


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hold(copy: Path) -> None:
    """A shared lock on ``copy``'s ``.in-use`` file for the rest of this process: the images of a
    large data set are read from the copy all through a run (the OS drops the lock with the
    process, also on ``kill -9``). Without ``fcntl`` (Windows) no copy is ever removed."""
    try:
        import fcntl
    except ImportError:
        return
    if str(copy) not in _held:
        held = open(f"{copy}.in-use", "a")  # noqa: SIM115 - kept open: the lock lives as long as the file
        fcntl.flock(held, fcntl.LOCK_SH)
        _held[str(copy)] = held


def _remove_others(target: Path, name: str) -> None:
    """Remove part copies (called under the path's lock: none is being written) and the whole
    copies of this archive path's other versions that no process holds."""
    for other in target.parent.glob(f"{name}-*"):
        if other == target or other.suffix == ".in-use":
            continue
        if other.suffix in (".partial", ".removing"):
            shutil.rmtree(other, ignore_errors=True)
        elif other.is_dir() and _unused(other):
            # renamed first: a removal cut short must not leave a part copy under a whole copy's name
            gone = other.rename(other.with_name(other.name + ".removing"))
            shutil.rmtree(gone, ignore_errors=True)
            Path(f"{other}.in-use").unlink(missing_ok=True)


def _unused(copy: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    with open(f"{copy}.in-use", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True  # the lock goes with the file; a run that opens it now finds no folder and unpacks


def _explained(e: BaseException, source: str, cache: Path) -> BaseException:
    if says_disk_full(e):
        return DiskFullError(
            f"the disk filled while unpacking {source} into {cache} ({human_bytes(free_bytes(cache))}"
            " free now that the part copy is removed): free some space, or set HF_DATASETS_CACHE "
            "to a folder on a larger disk")
    if isinstance(e, (tarfile.ReadError, EOFError, zipfile.BadZipFile, zlib.error)):
        return ValueError(f"{source} is damaged or ends early ({type(e).__name__}: {e}): download it again")
    return e


def _unpack_into(archive: Path, folder: Path, source: str) -> None:
    folder.mkdir(parents=True)
    bar = tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, desc=f"Unpacking {archive.name}",
               dynamic_ncols=True)
    with bar, open(archive, "rb") as raw:
        # tar first: a tar whose last member is a zip passes zipfile's test (it reads from the end)
        is_tar = tarfile.is_tarfile(raw)
        raw.seek(0)  # the tests leave the file where they stopped reading
        if is_tar:
            _untar(tarfile.open(fileobj=raw), raw, folder, bar, source)
        else:
            _unzip(zipfile.ZipFile(raw), folder, bar)
        bar.update(bar.total - bar.n)


def _unzip(zf: zipfile.ZipFile, folder: Path, bar: tqdm) -> None:
    # zipfile drops "..", drive letters and leading slashes from member names and writes links
    # as plain files, so nothing lands outside ``folder``
    with zf:
        for info in zf.infolist():
            zf.extract(info, folder)
            bar.update(info.compress_size)


def _untar(tar: tarfile.TarFile, raw, folder: Path, bar: tqdm, source: str) -> None:
    def members():  # read as extraction goes (a .tar.gz is one stream): the bar follows the file
        for member in tar:
            yield member
            bar.update(raw.tell() - bar.n)

    with tar:
        try:
            tar.extractall(folder, members=members(), filter="data")
        except tarfile.FilterError as e:
            raise ValueError(
                f"{source}: refused to unpack it: its member {e.tarinfo.name!r} is not safe to unpack "
                f"({e}). Unpack a trusted copy by hand and pass --set data.path=/path/to/the/unpacked/folder"
            ) from e
        # tarfile takes the end of the file for the end of the archive: a plain .tar cut between
        # two members reads as a shorter whole one (compressed ones fail on their own end)
        tar.fileobj.seek(tar.offset)
        end = tar.fileobj.read(tarfile.BLOCKSIZE)
        if len(end) < tarfile.BLOCKSIZE or end.strip(tarfile.NUL):
            raise tarfile.ReadError("no end-of-archive block after its last member")

"""Writing files and folders atomically, and their digests: the one mechanism for both in the project.

A file or folder is written under a temporary name in the same folder (``.<name>.<random>.partial``),
synced to disk, then renamed into place, so a reader sees either the old version or the complete new one,
never a half-written one, and a crash leaves only a ``.partial`` leftover (:func:`leftovers`) that a rerun
ignores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

from forecast.errors import InputError

PARTIAL_SUFFIX = ".partial"


def partial_path(path) -> Path:
    """A fresh temporary name beside ``path``: hidden, unique per writer, ending in ``.partial``.

    >>> partial_path("/data/skill.json").name.startswith(".skill.json.")
    True
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")


def leftovers(path) -> list[Path]:
    """Temporary names of interrupted writes of ``path`` (see :func:`partial_path`)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"))


def output_file(path, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` checked, before any work, as a file for :func:`atomic_write` to put in place: it names a file
    (not a folder, a device or a pipe, which an atomic rename would replace) whose folder is not a file. With
    ``suffixes`` (the first is the default) a name without a suffix gets the first, and another is refused.
    Raises :class:`InputError` naming ``what``.

    >>> output_file("plots/z500", "--out", (".png", ".pdf")).name
    'z500.png'
    >>> output_file("/dev/null", "--out")
    Traceback (most recent call last):
    forecast.errors.InputError: --out /dev/null exists and is not a regular file (a device, pipe or socket); give a file path
    """
    path = Path(path)
    if path.name in ("", ".", ".."):  # Path("") is Path(".")
        raise InputError(f"{what} {str(path)!r} names no file; give a file path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file path, e.g. {path / 'out'}{''.join(suffixes[:1])}")
    if path.exists() and not path.is_file():
        raise InputError(f"{what} {path} exists and is not a regular file (a device, pipe or socket); give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {path}: {parent} is a file, not a folder")
            break
    if suffixes:
        if not path.suffix:
            path = path.with_name(path.name + suffixes[0])
        elif path.suffix.lower() not in suffixes:
            raise InputError(f"{what} {path} must end in one of {', '.join(suffixes)}")
    return path


def _sync(path: Path) -> None:
    """fsync a file, or every file and folder of a folder tree (one writer's own: nothing else writes there)."""
    if path.is_dir():
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(Path(root) / name)
            _fsync(Path(root))
    else:
        _fsync(path)


def _fsync(path: Path) -> None:
    """fsync one file or one folder (its entries, not what they hold)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files(paths) -> None:
    """Make files durable: fsync each of ``paths`` that exists and then each folder holding one (so their
    names are durable too). Call it before deleting what the files replace."""
    folders = set()
    for path in map(Path, paths):
        if path.is_file():
            _fsync(path)
            folders.add(path.parent)
    for folder in sorted(folders):
        _fsync(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_write(path, replace: bool = True):
    """Yield a temporary path beside ``path``; on a normal exit sync what was written there and rename it to
    ``path``, on an error remove it.

    The caller writes one file or one folder (a Zarr store) at the yielded path, with any writer.

    Parameters
    ----------
    path : str or os.PathLike
        The final name. Its folder must exist.
    replace : bool
        Replace an existing ``path`` (a folder is removed first). With ``False`` an existing ``path`` is
        kept and the new version discarded: the first of several writers creating the same thing wins.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_write(folder / "note.txt") as tmp:
    ...     _ = tmp.write_text("complete")
    >>> (folder / "note.txt").read_text(), leftovers(folder / "note.txt")
    ('complete', [])
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        _sync(tmp)
        if tmp.is_dir():
            if replace and path.exists():
                _remove(path)
            try:
                os.rename(tmp, path)
            except OSError:
                if replace or not path.exists():
                    raise
        elif replace or not path.exists():
            os.replace(tmp, path)
        _fsync(path.parent)  # the new name; not the folder's other contents (other writers' temporary folders)
    finally:
        _remove(tmp)


def write_atomic(path, data: bytes | str, mode: int = 0o640) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically with permissions ``mode``; returns ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    data : bytes or str
        The whole content.
    mode : int
        Permission bits of the new file (before the umask).
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return path


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     file_sha256(f.name)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

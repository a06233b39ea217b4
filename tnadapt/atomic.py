"""All-or-nothing directory writes: a save is either wholly there or not at all, even under ``kill -9``.

Every save of tnadapt (adapters, LoRA exports, training states, fine-tuning checkpoints)
goes through :func:`staged_directory` (or :func:`write_files`, built on it):

1. under a lock on the parent directory (``flock``; re-entrant within one thread), the
   leftovers of earlier killed saves of the same target are removed;
2. the new content is assembled in a hidden sibling ``.NAME.tnadapt-staging-ID``; files
   that already sit in an existing target and are not rewritten are carried over as hard
   links, so a directory shared with other tools keeps their files;
3. every file and folder of the staging directory is fsynced, then the staging directory
   *replaces* the target in one step: ``rename`` for a new target, an atomic exchange
   (``renameat2(RENAME_EXCHANGE)`` on Linux, ``renamex_np(RENAME_SWAP)`` on macOS) for
   an existing one, after which the old content (now under the staging name) is deleted.

A process killed at any instant therefore leaves the target as the old save or the new
one, never a mix.  Where no atomic exchange exists (Windows, some network file systems)
the old target is first renamed to ``.NAME.tnadapt-old-ID``; a kill between the two
renames leaves the target missing for a moment, :func:`resolve_directory` then reads the
old save from its backup name, and the next save puts it back before it starts.

Files and folders are created with the process umask, like every other tool's.

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp()) / "run"
>>> _ = write_files(d, {"a.json": b"{}", "sub/b.bin": b"12"})
>>> _ = write_files(d, {"a.json": b"[]"})               # b.bin is carried over, a.json replaced
>>> sorted(p.relative_to(d).as_posix() for p in d.rglob("*")), (d / "a.json").read_bytes()
(['a.json', 'sub', 'sub/b.bin'], b'[]')
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

__all__ = [
    "check_digest",
    "check_directory_arg",
    "file_digest",
    "resolve_directory",
    "staged_directory",
    "write_file",
    "write_files",
]

_STAGING = ".tnadapt-staging-"
_OLD = ".tnadapt-old-"
_TMP = ".tnadapt-tmp-"


def check_directory_arg(directory: object, argument: str = "directory") -> Path:
    """``directory`` as a :class:`~pathlib.Path`; ``""`` and non-path values are refused, naming ``argument``."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"{argument}: expected a path (str or os.PathLike), got {type(directory).__name__}")
    text = os.fspath(directory)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise ValueError(f"{argument}: expected a non-empty path, got {text!r}")
    path = Path(text)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    if not path.name:
        raise ValueError(f"{argument}: cannot replace the file-system root {text!r}; name a directory inside it")
    return path


def file_digest(data: bytes) -> dict[str, object]:
    """``{"sha256": hex, "bytes": n}`` of ``data``: recorded beside a file so a load can tell it is intact."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def check_digest(path: str | os.PathLike[str], data: bytes, recorded: Mapping[str, object]) -> None:
    """``ValueError`` naming ``path`` unless ``data`` has the ``recorded`` :func:`file_digest`."""
    got = file_digest(data)
    if recorded.get("bytes") != got["bytes"] or recorded.get("sha256") != got["sha256"]:
        raise ValueError(
            f"{path}: the file differs from the one this save recorded ({got['bytes']} bytes, sha256 "
            f"{str(got['sha256'])[:12]}…; recorded {recorded.get('bytes')} bytes, sha256 "
            f"{str(recorded.get('sha256'))[:12]}…): it was damaged or replaced after the save"
        )


# ---------------------------------------------------------------------- locking
_registry_lock = threading.Lock()
_held: dict[tuple[int, int], tuple[threading.RLock, list[int]]] = {}  # (dev, ino) -> (lock, [fd, depth])


@contextlib.contextmanager
def _locked(parent: Path) -> Iterator[None]:
    """Exclusive lock on ``parent`` across processes (``flock``) and threads; re-entrant in one thread."""
    st = os.stat(parent)
    key = (st.st_dev, st.st_ino)
    with _registry_lock:
        entry = _held.setdefault(key, (threading.RLock(), [-1, 0]))
    rlock, state = entry
    with rlock:
        if state[1] == 0:
            state[0] = _flock(parent)
        state[1] += 1
        try:
            yield
        finally:
            state[1] -= 1
            if state[1] == 0 and state[0] >= 0:
                os.close(state[0])  # closing the descriptor releases the flock
                state[0] = -1


def _flock(parent: Path) -> int:
    try:
        import fcntl
    except ImportError:  # Windows: threads are still serialised, processes are not
        return -1
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a file system without flock: proceed unlocked rather than fail every save
        os.close(fd)
        return -1
    return fd


# ---------------------------------------------------------------------- syncing and swapping
def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink():
                _fsync_path(path)
        _fsync_path(Path(dirpath))


def _load_exchange() -> object:
    if sys.platform.startswith("linux"):
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: fn(-100, a, -100, b, 2)  # AT_FDCWD, RENAME_EXCHANGE
    if sys.platform == "darwin":
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renamex_np", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: fn(a, b, 2)  # RENAME_SWAP
    return None


_EXCHANGE = _load_exchange()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b``; ``False`` where the platform or file system cannot."""
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(os.fsencode(a), os.fsencode(b)) == 0:  # type: ignore[operator]
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot swap {str(a)!r} and {str(b)!r}: {os.strerror(err)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _leftovers(target: Path, marker: str) -> list[Path]:
    prefix = f".{target.name}{marker}"
    try:
        return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _recover(target: Path) -> None:
    """Undo what killed saves of ``target`` left behind (caller holds the parent lock)."""
    olds = _leftovers(target, _OLD)
    if olds and not os.path.lexists(target):  # killed between the two renames of the fallback swap
        os.rename(olds[-1], target)
        olds = olds[:-1]
    for path in (*olds, *_leftovers(target, _STAGING)):
        _discard(path)


def _discard(path: Path) -> None:
    """Remove a leftover and, first, what saves nested inside it left beside it (``..NAME.tnadapt-staging-…``)."""
    for marker in (_STAGING, _OLD, _TMP):
        for nested in _leftovers(path, marker):
            _discard(nested)
    _remove(path)


def resolve_directory(directory: str | os.PathLike[str]) -> Path:
    """Where the last complete save of ``directory`` is: itself, or the backup a killed fallback swap left.

    Readers use it so a save killed between the two renames of the fallback swap (no atomic
    exchange on the platform) still reads as the old save.
    """
    path = Path(directory)
    if os.path.lexists(path):
        return path
    olds = _leftovers(path, _OLD)
    return olds[-1] if olds else path


def _swap_in(staging: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(staging, target)
    elif _exchange(staging, target):
        _remove(staging)  # the old content, now under the staging name
    else:
        old = target.with_name(f".{target.name}{_OLD}{uuid.uuid4().hex}")
        os.rename(target, old)
        os.rename(staging, target)
        _remove(old)
    _fsync_path(target.parent)


# ---------------------------------------------------------------------- the public writers
@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike[str], *, argument: str = "directory") -> Iterator[Path]:
    """Yield an empty hidden staging directory; on a normal exit it replaces ``directory`` atomically.

    Whatever the block writes into the yielded path becomes the whole new content of
    ``directory`` (nothing of an existing one is kept: see :func:`write_files` for that).
    An exception in the block removes the staging directory and leaves ``directory``
    untouched; a kill leaves it as it was, and the next save cleans up.
    """
    target = check_directory_arg(directory, argument)
    if target.is_symlink():  # replace what the link points to, keep the link
        target = Path(os.path.realpath(target))
    if os.path.lexists(target) and not target.is_dir():
        raise ValueError(f"{argument}: {str(target)!r} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        _recover(target)
        staging = target.with_name(f".{target.name}{_STAGING}{uuid.uuid4().hex}")
        os.mkdir(staging)
        try:
            yield staging
            _fsync_tree(staging)
            _swap_in(staging, target)
        except BaseException:
            _remove(staging)
            raise


def _write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _is_temp_of(name: str, written: set[str]) -> bool:
    """A hidden ``.NAME.<suffix>`` temp file of a file being written (left by older tnadapt versions)."""
    return name.startswith(".") and any(name.startswith(f".{w}.") for w in written)


def _carry_over(source: Path, dest: Path, skip: set[PurePosixPath], prefix: PurePosixPath) -> None:
    """Hard-link (or copy) every entry of ``source`` not in ``skip`` into ``dest``, recursively."""
    written = {p.name for p in skip if p.parent == prefix}
    for entry in os.scandir(source):
        rel = prefix / entry.name
        if rel in skip or _is_temp_of(entry.name, written):
            continue
        out = dest / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), out)
        elif entry.is_dir():
            out.mkdir(exist_ok=True)
            _carry_over(Path(entry.path), out, skip, rel)
        else:
            try:
                os.link(entry.path, out)
            except OSError:
                shutil.copy2(entry.path, out)


def write_files(directory: str | os.PathLike[str], files: Mapping[str, bytes], *, argument: str = "directory") -> Path:
    """Replace ``files`` (relative POSIX path -> bytes) in ``directory`` all at once; returns the path.

    Other entries of an existing ``directory`` are kept (hard-linked into the new version);
    hidden temp files older tnadapt versions left beside a rewritten file are dropped.
    The new version replaces the old one atomically (see the module docstring).
    """
    rel: dict[PurePosixPath, bytes] = {}
    for name, data in files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or not path.parts or ".." in path.parts:
            raise ValueError(f"files: expected relative paths inside the directory, got {name!r}")
        rel[path] = data
    target = check_directory_arg(directory, argument)
    with staged_directory(target, argument=argument) as staging:  # (which resolves a symlinked target)
        if target.is_dir():
            parents = {p for path in rel for p in path.parents if p != PurePosixPath(".")}
            _carry_over(target, staging, set(rel), PurePosixPath("."))
            for p in parents:  # a carried-over file may not stand where a written file needs a folder
                if (staging / p).exists() and not (staging / p).is_dir():
                    raise ValueError(f"files: {p.as_posix()!r} is a file in {str(target)!r}, not a folder")
        for path, data in rel.items():
            _write_new(staging / path, data)
    return target


def write_file(path: str | os.PathLike[str], data: bytes, *, argument: str = "path") -> Path:
    """Replace the single file ``path`` by ``data`` atomically (temp file, fsync, ``os.replace``); returns it.

    Temp files of earlier killed writes of the same file are removed first.
    """
    target = check_directory_arg(path, argument)
    if target.is_dir():
        raise ValueError(f"{argument}: {str(target)!r} is a directory, expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        for old in _leftovers(target, _TMP):
            _remove(old)
        tmp = target.with_name(f".{target.name}{_TMP}{uuid.uuid4().hex}")
        try:
            _write_new(tmp, data)
            _fsync_path(tmp)
            os.replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
        _fsync_path(target.parent)
    return target

"""Atomic file writes: a unique temporary file beside the target, the user's umask, a rename.

Every writer of the package goes through :func:`atomic_path`, so a reader never sees a
half-written file, two processes writing the same target never share a temporary name,
and outputs get the permissions the user's umask gives (not ``mkstemp``'s 0600).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cbhlib.errors import CbhError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_error(path: Path, exc: OSError) -> CbhError:
    """One line for the OS errors a writer meets (full disk, read-only folder, no permission)."""
    what = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "a read-only file system",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
    }.get(exc.errno or 0)
    return CbhError(
        f"{path}: cannot write: expected a writable folder with free space; found "
        f"{what or exc.strerror or type(exc).__name__}"
    )


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o666) -> Iterator[Path]:
    """Yield a unique temporary path in ``path``'s folder; on success rename it to ``path``.

    The temporary file is removed on any error. Permissions are ``mode & ~umask``.

    Raises:
        CbhError: the folder cannot be created or written (full disk, read-only, ...).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _disk_error(path, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            raise _disk_error(path, exc) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same existing file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwrite(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], force: bool = False, what: str = "output"
) -> None:
    """Stop before a writer replaces one of its own inputs, or an existing file without ``force``.

    Raises:
        CbhError: naming the output and the input it would replace.
    """
    out = Path(output)
    for src in inputs:
        if src is not None and Path(src).exists() and out.exists() and same_file(out, src):
            raise CbhError(
                f"{out}: {what}: expected a new file; found one of this command's own inputs "
                f"({src}); choose another output path"
            )
    if out.exists() and not force:
        raise CbhError(
            f"{out}: {what}: expected a path that does not exist yet; found an existing file "
            "(pass --force to replace it)"
        )

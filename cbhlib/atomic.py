"""Atomic file writes: a unique temporary file beside the target, the user's umask, a rename.

Every writer of the package goes through :func:`atomic_path`, so a reader never sees a
half-written file, two processes writing the same target never share a temporary name,
and outputs get the permissions the user's umask gives (not ``mkstemp``'s 0600).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cbhlib.errors import CbhError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "a read-only file system",
    errno.EACCES: "permission denied",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "the file-size limit (ulimit -f) reached",
}


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a write failure: from an OSError, or from the text of an HDF5 / torch error
    (``errno = 28`` in h5py's messages, 'No space left' / 'File too large' in torch's)."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        return exc.errno
    text = str(exc)
    m = re.search(r"errno = (\d+)", text)
    if m and int(m.group(1)) in DISK_ERRORS:
        return int(m.group(1))
    for code in DISK_ERRORS:
        if os.strerror(code).lower() in text.lower():
            return code
    return None


def _disk_error(path: Path, exc: BaseException) -> CbhError:
    """One line for the OS errors a writer meets (full disk, file-size limit, read-only folder, no permission)."""
    code = disk_errno(exc)
    found = DISK_ERRORS.get(code or -1) or getattr(exc, "strerror", None) or type(exc).__name__
    return CbhError(f"{path}: cannot write: expected a writable folder with free space; found {found}")


def _room(folder: Path) -> tuple[int | None, int | None]:
    """Free bytes in ``folder`` (None: unknown) and the file-size limit (ulimit -f; None: unlimited)."""
    import resource

    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return free, None if limit == resource.RLIM_INFINITY else limit


def check_room(path: str | os.PathLike, n_bytes: int) -> None:
    """Refuse, in one line, a write of about ``n_bytes`` that the folder's free space or the file-size
    limit (ulimit -f) cannot hold: HDF5 may crash on such a write instead of raising."""
    path = Path(path)
    special = special_kind(path)
    if special:  # named as such by atomic_path, not as a lack of room
        return
    try:
        target = path.resolve() if path.is_symlink() else path  # a link: room where its target is written
    except (RuntimeError, OSError):
        return  # a loop of links: atomic_path names it
    free, limit = _room(next((p for p in [target.parent, *target.parent.parents] if p.exists()), Path(".")))
    size = f"a file of about {n_bytes / 2**20:.1f} MiB"
    if free is not None and n_bytes > free:
        found = f"{DISK_ERRORS[errno.ENOSPC]} for {size} ({free / 2**20:.1f} MiB free)"
    elif limit is not None and n_bytes > limit:
        found = f"a file-size limit of {limit / 2**20:.2f} MiB (ulimit -f) for {size}"
    else:
        return
    raise CbhError(f"{path}: cannot write: expected a writable folder with free space; found {found}")


def write_failure(path: str | os.PathLike, exc: BaseException) -> CbhError:
    """One line for a writer whose library hides the OS error (torch.save): what the folder allows."""
    path = Path(path)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    free, limit = _room(path.parent if path.parent.exists() else Path("."))
    if free is not None and free < 16 * 2**20:
        found = f"{DISK_ERRORS[errno.ENOSPC]} ({free / 2**20:.1f} MiB free)"
    elif limit is not None:
        found = f"a file-size limit of {limit / 2**20:.1f} MiB (ulimit -f)"
    else:
        found = "a failed write"
    return CbhError(f"{path}: cannot write: expected a writable folder with free space; found {found} ({first})")


def special_kind(path: Path) -> str:
    """``a character device``, ``a named pipe``, ... where ``path`` (links followed) is neither a
    regular file nor a folder nor absent; else ``""``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    kinds = {
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "")


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o666) -> Iterator[Path]:
    """Yield a unique temporary path in ``path``'s folder; on success rename it to ``path``.

    The temporary file is removed on any error. Permissions are ``mode & ~umask``. A symbolic
    link is followed: the file it points to is replaced and the link kept.

    Raises:
        CbhError: the folder cannot be created or written (full disk, read-only, ...).
    """
    path = Path(path)
    special = special_kind(path)
    if special:  # a rename would put a regular file in place of a device, a pipe or a socket
        raise CbhError(f"{path}: cannot write: expected a regular file or a new name; found {special}")
    if path.is_symlink():  # the rename would replace the link itself with a file and leave its target as it was
        try:
            path = path.resolve(strict=False)
        except (RuntimeError, OSError):  # a loop of links
            raise CbhError(f"{path}: cannot write: expected a file or a link to one; found a loop of links") from None
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
    except (OSError, RuntimeError) as exc:  # h5py and torch report write failures as RuntimeError too
        tmp.unlink(missing_ok=True)
        if disk_errno(exc) is not None:
            raise _disk_error(path, exc) from None
        if isinstance(exc, OSError) and tmp.name in str(exc):  # name the output, not the removed temporary file
            first = str(exc).replace(str(tmp), str(path)).replace(tmp.name, path.name).strip().splitlines()[0]
            raise CbhError(f"{path}: cannot write: {first}") from None
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
    special = special_kind(out)
    if special or out.is_dir():
        found = special or "an existing folder"
        raise CbhError(
            f"{out}: {what}: expected a regular file or a new name; found {found} (--force does not replace it)"
        )
    if out.exists() and not force:
        raise CbhError(
            f"{out}: {what}: expected a path that does not exist yet; found an existing file "
            "(pass --force to replace it)"
        )

"""The ``cbh`` command. Errors for people: one line, non-zero exit, no traceback (``--debug`` shows it).

One module per command group: :mod:`~cbhlib.cli.data` (campaign files),
:mod:`~cbhlib.cli.run` (the pipeline), :mod:`~cbhlib.cli.model` (models), :mod:`~cbhlib.cli.runs`
(finished runs); this module
assembles the parser and turns errors into one line.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import sys
from typing import NoReturn

from cbhlib.atomic import DISK_ERRORS, disk_errno
from cbhlib.cli import data, model, run, runs
from cbhlib.cli.common import clean, fail
from cbhlib.errors import CbhError

log = logging.getLogger("cbhlib.cli")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: ``cbh <command>: <what>`` and exit 2, no usage block."""

    _argv: list[str] = []

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def,override]
        self._argv = list(sys.argv[1:] if args is None else args)  # what error() can point at
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(
            f"{self.prog}: error: {clean(message + self._hint(message), newlines=False)} (see {self.prog} --help)\n"
        )
        raise SystemExit(2)

    def _hint(self, message: str) -> str:
        """The closest spelling of a mistyped choice, or the unknown options behind a missing one."""
        known = [o for a in self._actions for o in a.option_strings]
        bad = re.search(r"invalid choice: '([^']*)'", message)
        if bad:
            choices = [str(c) for a in self._actions if a.choices for c in a.choices]
            close = difflib.get_close_matches(bad.group(1), choices, n=1)
            return f"; did you mean '{close[0]}'?" if close else ""
        extra = re.search(r"unrecognized arguments: (--[^ =]+)", message)
        if extra:  # the top parser reports a command's leftovers: look among that command's options
            subs = next((a.choices for a in self._actions if isinstance(a.choices, dict)), {})
            cmd = next((subs[t] for t in self._argv if t in subs), None)  # the first word naming a command
            opts = known + [o for a in getattr(cmd, "_actions", []) for o in a.option_strings]
            close = difflib.get_close_matches(extra.group(1), opts, n=1)
            return f"; did you mean {close[0]}?" if close else ""
        if "arguments are required" in message:
            words = self._argv[: self._argv.index("--")] if "--" in self._argv else self._argv  # after --: positionals
            unknown = [  # argparse accepts an unambiguous prefix (--camp for --campaign): that is known
                w.split("=")[0]
                for w in words
                if w.startswith("--") and not any(o.startswith(w.split("=")[0]) for o in known)
            ]
            if unknown:
                close = difflib.get_close_matches(unknown[0], known, n=1)
                return f"; unknown option {unknown[0]}" + (f" (did you mean {close[0]}?)" if close else "")
        return ""


def build_parser() -> argparse.ArgumentParser:
    from cbhlib import __version__

    p = _Parser(
        prog="cbh",
        description="Cloud base height from ER-2 thermal imagery fused with "
        "atmospheric context, evaluated across flights.",
    )
    p.add_argument("--version", action="version", version=f"cbh (cbhlib) {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in (data, run, model, runs):
        group.register(sub)
    for sp in sub.choices.values():  # the shared options work after the command too (cbh run --debug)
        _shared_options(sp)
    return p


def _shared_options(sp: argparse.ArgumentParser) -> None:
    have = {o for action in sp._actions for o in action.option_strings}
    sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")
    if "--quiet" not in have:
        sp.add_argument("--quiet", action="store_true", help="only results and errors: no progress bars or warnings")
    sp.add_argument("--verbose", action="store_true", help="also the library's info lines (what it reads, computes)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    tqdm_before = os.environ.get("TQDM_DISABLE")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # progress bars of training and pretraining
    try:
        return _dispatch(args, quiet, verbose)
    finally:
        if tqdm_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_before


def _dispatch(args: argparse.Namespace, quiet: bool, verbose: bool) -> int:
    from cbhlib.pipeline.notebook import configure_logging

    configure_logging(
        None,
        level=logging.DEBUG if args.debug else logging.INFO,
        stderr_level=logging.DEBUG
        if args.debug
        else logging.INFO
        if verbose
        else logging.ERROR
        if quiet
        else logging.WARNING,
    )
    try:
        return int(args.func(args) or 0)
    except CbhError as exc:
        if args.debug:
            raise
        fail(args.command, f"error: {exc}")
        return 2
    except MemoryError:
        fail(args.command, "error: out of memory (a declared size too large for this machine?)")
        return 2
    except RecursionError:
        fail(args.command, "error: an input nested too deeply to read (expected a few levels)")
        return 2
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        fail(args.command, "interrupted; completed units are kept, rerun to resume")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        code = disk_errno(exc) if isinstance(exc, OSError) else None
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # a write the library does not wrap met a full disk
            where = getattr(exc, "filename", None) or "an output file (a log or a figure)"
            kept = "; finished units are kept, rerun to resume" if args.command in ("run", "train", "sweep") else ""
            fail(args.command, f"error: {where}: cannot write: {DISK_ERRORS[code]}{kept}")
            return 2
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(
            args.command,
            f"unexpected error: {type(exc).__name__}: {first} (rerun with --debug for the traceback, and please "
            "report it)",
        )
        return 1


__all__ = ["build_parser", "main"]

"""What a command met that was not its input's fault, and what it left: the errors of the
environment (a full disk, a quota, a read-only file system, denied permissions, an I/O error),
an interrupt, a file that is not text. ``amdm_geom.app.cli.main`` reports each in one line with
these, wherever in a command it was raised, also wrapped in another exception (``chain``).

What a run left at an output is judged from the file system: ``mark(path)`` before the run, then
``left``: nothing written, unchanged (a store being replaced keeps the old one until the new one
is complete), a trace store left incomplete (its ``complete`` attribute is false), or a folder
partly written.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path, PurePath

__all__ = ["ENVIRONMENT_ERRNOS", "EXIT_ENVIRONMENT", "EXIT_INTERRUPTED", "EXIT_USAGE", "chain", "environment_error",
           "environment_line", "inputs_of", "left", "mark", "outputs_of", "quiet_exit", "undecodable_file"]

#: Exit codes (README, "Exit codes"): 1 is a command's own failure (a failed sweep point or
#: validate task, a damaged input) or an internal error (with its traceback).
EXIT_USAGE = 2  # a refused input: a bad option, a missing or unreadable input file, a path that is taken
EXIT_ENVIRONMENT = 74  # EX_IOERR (sysexits.h): the file system refused a write or read mid-work
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C

#: The errors of the file system or the machine rather than of the input: errno -> what to do,
#: and whether choosing another output (the command's --out, --report, ...) is a way out.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("free space on that file system", True),
    errno.EDQUOT: ("free space within your disk quota", True),
    errno.EFBIG: ("the file system's largest file size was reached", True),
    errno.EROFS: ("remount it read-write", True),
    errno.EACCES: ("check its permissions", True),
    errno.EPERM: ("check its permissions", True),
    errno.EIO: ("the device failed: check it (dmesg)", True),
    errno.ESTALE: ("the network file system lost the file: run the command again", False),
    errno.EMFILE: ("raise the limit on open files (ulimit -n) and run the command again", False),
    errno.ENFILE: ("the system has too many open files: run the command again later", False),
}


def chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from or while handling (``__cause__``, else a
    ``__context__`` not deliberately suppressed by ``raise ... from None``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)


def environment_error(exc: BaseException) -> OSError | None:
    """The first error of the environment (``ENVIRONMENT_ERRNOS``) in ``exc``'s chain, or None."""
    return next((e for e in chain(exc) if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS), None)



def outputs_of(name: str, spec) -> list[tuple[str, object, str]]:
    """``(option, path, what to do when it was left partly written)`` for what the command
    ``name`` with the (parsed) ``spec`` writes."""
    if spec is None:
        return []
    if name == "probe":
        return [("--out", spec.run.out, "")]
    if name == "rerun":
        return [("--out", spec.out if spec.out is not None else spec.store, "")]
    if name == "sweep":
        return [("--out", spec.folder, "run the sweep again (complete stores are skipped)")]
    if name == "validate":
        return [("--runs", spec.runs, "run validate again"), ("--report", spec.report, "run validate again")]
    if name == "analyze":
        return [("--out", Path(spec.out) / spec.analysis, "run the analysis again")]
    if name == "train":
        return [("--out", spec.out, "run train again")]
    return []


def inputs_of(spec) -> list:
    """The positional paths of a command's ``spec`` (its input files and folders)."""
    if spec is None:
        return []
    out = []
    for name, field in type(spec).model_fields.items():
        if (field.json_schema_extra or {}).get("positional"):
            value = getattr(spec, name)
            out += [v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, Path)]
    return out


def _local(path) -> Path | None:
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return None  # (a URL store: nothing to say about it from here)
    return Path(text.removeprefix("file://"))


def mark(path) -> tuple | None:
    """What shows that ``path`` changed: the identity and time of it and of its ``zarr.json``."""
    local = _local(path)
    if local is None or not os.path.lexists(local):
        return None
    marks = []
    for p in (local, local / "zarr.json"):
        try:
            st = os.lstat(p)
            marks.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            marks.append(None)
    return tuple(marks)


def left(outputs: list[tuple[str, object, str]], before: dict) -> str:
    """What a failed command left at its ``outputs`` (``(option, path, what to do when it was
    left partly written)``; ``before`` maps each path to its ``mark`` before the run), e.g. ``the
    store X is incomplete (complete = false); ...``."""
    said = []
    for option, path, again in outputs:
        local = _local(path)
        if local is None:
            said.append(f"the store {path} may be incomplete")
            continue
        try:
            now = mark(path)
            if now is None:
                said.append(f"nothing was written to {path}")
            elif now == before.get(str(path)):
                said.append(f"{path} is unchanged")
            elif (local / "zarr.json").is_file() and "complete" in (attrs := _zarr_attrs(local)):
                said.append(f"the store {path} is complete" if attrs["complete"] is True else
                            f"the store {path} is incomplete (complete = false); run the command again with "
                            "--overwrite to redo it")
            else:
                said.append(f"{path} was partly written" + (f"; {again}" if again else ""))
        except Exception:  # noqa: BLE001 - (describing must not hide the error itself)
            said.append(f"{path} may be partly written")
    if len(said) > 1:  # (several outputs: only those that changed)
        changed = [s for s in said if not s.startswith("nothing was written") and not s.endswith(" is unchanged")]
        said = changed or ["nothing was written to " + " or ".join(str(p) for _, p, _ in outputs)]
    return "; ".join(said)


def _zarr_attrs(store: Path) -> dict:
    doc = json.loads((store / "zarr.json").read_bytes())
    return doc.get("attributes", {}) if isinstance(doc, dict) else {}


def environment_line(exc: OSError, outputs: list[tuple[str, object, str]], before: dict) -> str:
    """The one line for ``exc``: what happened, to which path (its file name, else the outputs),
    what to do, and what was left (``left``)."""
    reason = exc.strerror or os.strerror(exc.errno)
    reason = reason[:1].lower() + reason[1:]
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    if files:
        where = f"{reason}: {' -> '.join(files)}"
    elif outputs:
        where = f"{reason} while writing {' and '.join(str(p) for _, p, _ in outputs)}"
    else:
        where = reason
    advice, elsewhere = ENVIRONMENT_ERRNOS[exc.errno]
    option = " or ".join(dict.fromkeys(o for o, _, _ in outputs))
    if elsewhere and option:
        advice += f" or choose another {option}" + (" on a writable file system" if exc.errno == errno.EROFS else "")
    line = f"{where}: {advice}"
    what = left(outputs, before)
    return f"{line}; {what}" if what else line


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def undecodable_file(exc: UnicodeDecodeError, inputs=()) -> str:
    """The file that could not be decoded: the innermost path being read where it was raised
    (e.g. ``Path.read_text``'s own path, an open file's name), else one of ``inputs`` (the
    command's input paths)."""
    for frame in reversed(list(_frames(exc.__traceback__))):
        found = []
        for value in list(frame.f_locals.values()):
            name = getattr(value, "name", None) if hasattr(value, "read") else None
            path = Path(value) if isinstance(value, PurePath) else Path(name) if isinstance(name, str) else None
            if path is not None and path.exists():
                found.append(path)
        if found:
            file = next((p for p in found if p.is_file()), None)
            return str(file) if file is not None else f"a file under {found[0]}"
    inputs = [str(v) for v in inputs]
    return f"one of {', '.join(inputs)}" if len(inputs) > 1 else inputs[0] if inputs else "an input file"


def quiet_exit() -> None:
    """Call before a process ends on a reported error: work abandoned inside zarr's event loop (by
    Ctrl-C, or by an error in one of several concurrent reads) leaves tasks and coroutines that
    never finished, and asyncio's "Task was destroyed but it is pending" and "coroutine ... was
    never awaited" at exit would follow the one line and say nothing more."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

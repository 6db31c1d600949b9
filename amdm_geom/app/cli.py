"""The ``amdm-geom`` command line, generated from the specs by tyro.

- ``amdm-geom validate [--quick]``: the main job (``amdm_geom.app.validate``): the closed-form checks,
  the default probes, every analysis on their stores and the ablations; the verdict table, and
  the report ``data/report/index.html``. A violated bound is a finding, not a failure: it exits
  non-zero only on an internal error.
- ``amdm-geom probe NAME [options]``: run one probe into a trace store; its options are its
  ``Spec``'s fields (``amdm-geom probe NAME --help``).
- ``amdm-geom analyze ANALYSIS [STORE...]``: one analysis, results and figures under ``--out``.
- ``amdm-geom rerun STORE [--out NEW]``: run a store's spec again, bit for bit.
- ``amdm-geom ecosystem PATH_A PATH_B``: whether two pipelines are one diffusion ecosystem.
- ``amdm-geom sweep SPEC_FILE [--out DIR --scheduler ADDRESS --workers N]``: a grid of probe specs
  on dask.distributed (``amdm_geom.app.sweep``), one store per point; complete stores are skipped.
- ``amdm-geom clean [FOLDER...]``: remove the stores and results this toolkit wrote.

Each command's options come from a spec (``amdm_geom.core.spec.Spec``) through tyro, chosen because
it builds a command line from typed, nested dataclass or pydantic configs with the help taken
from their docstrings (``amdm_geom.app.spec_options``): a nested spec's fields appear without a
prefix (``--steps``, not ``--sampler.steps``), under a field's alias if it has one, except a
probe's models, nested under their names (``--model-a.guidance``). tyro passes the options' text
to the spec unparsed, so that the spec's own validators check it and an error names the option
and shows the value as typed. Every bad input is one line, ``amdm-geom COMMAND: error: ...``, exit
code 2, before any work and before any file is written. The environment's errors met during the
work are one line too, found wherever they were raised (``main``): a file system that refuses a
write (full, over quota, read-only, permission denied: exit code 74) names the path, what to do
and what the run left; Ctrl-C (exit code 130) says what the run left; a file that is not UTF-8
text (exit code 2) is named.
"""

from __future__ import annotations

import sys
import typing

from amdm_geom import __version__
from amdm_geom.app.spec_options import UsageError, options, parse, usage_error
from amdm_geom.core.spec import Spec, SpecError

__all__ = ["COMMANDS", "USER_ERRORS", "UsageError", "main", "options", "parse", "usage_error"]

#: command -> one line
COMMANDS = {
    "validate": "run every check, the default probes and the analyses; print the verdicts, write the report",
    "probe": "run one probe into a trace store (data/runs/<name>.zarr)",
    "analyze": "run one analysis on trace stores; results and figures under data/report",
    "rerun": "run a trace store's spec again into a new store: the same arrays, bit for bit",
    "ecosystem": "are two pipelines one diffusion ecosystem? (VAE, SDE, latent shape, proximity)",
    "train": "train a shipped ecosystem's models from their configs (digits: about 45 min on 2 cores)",
    "sweep": "run a sweep file's grid of probe specs on dask.distributed, one store per point (skips complete ones)",
    "clean": "remove the trace stores and results this toolkit wrote (default: data/runs data/report)",
}


#: What a user's input can cause: reported as one line with exit code 2, never a traceback.
#: (``ValueError`` includes ``UsageError``, ``SpecError`` and the store's ``StoreError``.)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


# --------------------------------------------------------------------------------------------
# the commands


def _listing(rows: dict[str, str], width: int = 22) -> str:
    return "\n".join(f"  {name:{width}s} {text}" for name, text in rows.items())


def _top_help() -> str:
    return (f"usage: amdm-geom [-h] [--version] COMMAND ...\n\nTheory validation and latent geometry for AMDM "
            f"(aggregation of multiple diffusion models).\n\ncommands:\n{_listing(COMMANDS, 10)}\n\n"
            "'amdm-geom COMMAND --help' lists a command's options.")


def _probe(args: list[str]) -> tuple[Spec, typing.Callable[[], int]]:
    from amdm_geom.app.runner.registry import load_probe, probe_names, summary

    if not args or args[0] in ("-h", "--help"):
        rows = {name: summary(load_probe(name)) for name in probe_names()}
        print(f"usage: amdm-geom probe NAME [options]\n\nprobes:\n{_listing(rows)}\n\n"
              "'amdm-geom probe NAME --help' lists a probe's options.")
        raise SystemExit(0)
    try:
        module = load_probe(args[0])
    except ValueError as exc:
        raise UsageError(f"argument NAME: {exc}") from None
    spec = parse(module.Spec, args[1:], prog=f"amdm-geom probe {args[0]}", description=module.__doc__)

    def run() -> int:
        module.run(spec)
        return 0

    return spec, run


def _prepared(name: str, args: list[str]) -> tuple[Spec, typing.Callable[[], int]]:
    """The command's spec (parsed and checked: a bad option raises ``UsageError``) and a function
    that runs it."""
    if name == "probe":
        return _probe(args)
    from amdm_geom.app import commands, validate

    cls, run, description = {
        "validate": (validate.ValidateCommand, validate.run, None),
        "analyze": (commands.AnalyzeCommand, commands.analyze, commands.analyze_description),
        "rerun": (commands.RerunCommand, commands.rerun, None),
        "ecosystem": (commands.EcosystemCommand, commands.ecosystem, None),
        "train": (commands.TrainCommand, commands.train, None),
        "sweep": (commands.SweepCommand, commands.sweep, None),
        "clean": (commands.CleanCommand, commands.clean, None),
    }[name]
    text = description(args) if callable(description) else description
    spec = parse(cls, args, prog=f"amdm-geom {name}", description=text)
    return spec, lambda: run(spec)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line. A bad option or input is one line on stderr,
    ``amdm-geom COMMAND: error: ...``, exit code 2, before any work or any file is written; an
    error of the environment met during the work (a full disk, a read-only file system, denied
    permissions: an ``OSError`` anywhere in the exception's chain) is one line naming the path,
    what to do and what was left, exit code 74; Ctrl-C is one line saying what was left, exit
    code 130 (``runner.failures``). Any other exception is an internal error, with its traceback."""
    script = argv is None  # (the process ends with this call)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"amdm-geom {__version__}")
        return 0
    command = argv[0]
    prefix = f"amdm-geom {command}" if command in COMMANDS else "amdm-geom"
    spec, outputs, before = None, [], {}
    try:
        if command not in COMMANDS:
            raise UsageError(f"argument COMMAND: invalid choice: {command!r} (choose from {', '.join(COMMANDS)})")
        spec, run = _prepared(command, argv[1:])
        from amdm_geom.app.runner.failures import mark, outputs_of

        outputs = outputs_of(command, spec)
        before = {str(path): mark(path) for _, path, _ in outputs}
        return run()
    except (KeyboardInterrupt, Exception) as exc:
        reported = _report(exc, spec, outputs, before)
        if reported is None:  # an internal error: its traceback
            raise
        line, code = reported
        if script:
            from amdm_geom.app.runner.failures import quiet_exit

            quiet_exit()
        print(f"{prefix}: error: {_one_line(line)}", file=sys.stderr)
        return code


def _report(exc: BaseException, spec, outputs, before) -> tuple[str, int] | None:
    """``(the one line, the exit code)`` for an interrupt, an error of the environment, a file
    that is not text or a refused input raised by a command; None for an internal error."""
    from amdm_geom.app.runner import failures

    chain = list(failures.chain(exc))
    if any(isinstance(e, KeyboardInterrupt) for e in chain):
        left = failures.left(outputs, before) if outputs else ""
        return "interrupted" + (f"; {left}" if left else ""), failures.EXIT_INTERRUPTED
    found = failures.environment_error(exc)
    if found is not None:
        return failures.environment_line(found, outputs, before), failures.EXIT_ENVIRONMENT
    undecodable = next((e for e in chain if isinstance(e, UnicodeDecodeError)), None)
    if undecodable is not None and (exc is undecodable or not isinstance(exc, USER_ERRORS)):
        where = failures.undecodable_file(undecodable, failures.inputs_of(spec))
        return (f"{where} is not UTF-8 text ({undecodable.reason} at byte {undecodable.start}); give a text file "
                "saved as UTF-8", failures.EXIT_USAGE)
    if not isinstance(exc, USER_ERRORS):
        return None
    if isinstance(exc, SpecError):  # (a spec made by the command itself, e.g. from a store)
        exc = UsageError(str(exc))
    return str(exc), failures.EXIT_USAGE

if __name__ == "__main__":
    sys.exit(main())

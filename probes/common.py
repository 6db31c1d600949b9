"""What every probe shares: the sampler's command-line options (defaults from the paper, App.
F.2: T = 50, s = 20, w = 0.5, eta = 0.3), the checks every option goes through, and running a
sampler into a trace store.

Every option is checked before any model is built and before any file or folder is created:

- value by value, by the ``argparse`` ``type=`` callables below (``finite_float``,
  ``nonneg_float``, ``positive_float``, ``unit_float``, ``positive_int``, ``nonneg_int``,
  ``seed_int``, ``image_size``, ``device_name``, ``existing`` / ``existing_path``, ``creatable_dir``,
  ``writable_file``), which the ``amdm-geom`` parser reports as one line naming the option;
- then options that depend on each other (``check_sampler_args``: the window against ``--steps``,
  one weight per partner model, the seeds, ``--names`` against the hooks the run records), with
  ``OptionError``, the same one line;
- then the output path, and only then the models are built (``run_probe``).

Nothing heavy is imported here at module level, so the command line's parser can use these
checks without loading torch or diffusers.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "DEFAULT_AGG_STEPS",
    "DTYPES",
    "DTYPE_NAMES",
    "MAX_SEED",
    "OptionError",
    "add_sampler_arguments",
    "check_output_path",
    "check_sampler_args",
    "creatable_dir",
    "device_name",
    "existing",
    "existing_path",
    "finite_float",
    "float_in",
    "image_size",
    "int_at_least",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "run_probe",
    "sampler_config",
    "seed_int",
    "TRAIN_TIMESTEPS",
    "unit_float",
    "writable_file",
]

DTYPE_NAMES = ("float16", "float32", "float64")
#: Seeds are in [0, MAX_SEED): torch generators and numpy seed sequences take them all.
MAX_SEED = 2**63
#: The default of ``--agg-steps`` (s), clipped to ``--steps`` when that is smaller.
DEFAULT_AGG_STEPS = 20
#: The training timesteps of every schedule ``amdm_geom.schedules.make_scheduler`` builds (SD 1.x's)
TRAIN_TIMESTEPS = 1000


def __getattr__(name):  # DTYPES needs torch; importing this module must not
    if name == "DTYPES":
        import torch

        return {n: getattr(torch, n) for n in DTYPE_NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OptionError(ValueError):
    """A bad command-line option (or combination), one line: ``argument --opt: message``."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")
        self.option = option


# -- argparse type= callables: one value each, one-line ArgumentTypeError -------------------------


def _shown(text: str) -> str:
    return text if text and text.strip() == text and text.isprintable() else repr(text)


def _bad(text: str, accepted: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {accepted}; got {_shown(text)}")


def _range_text(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, name: str | None = None) -> Callable[[str], float]:
    """An argparse ``type=``: a finite float in the given range (NaN and inf are refused)."""
    accepted = _range_text(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _bad(text, accepted) from None
        if not math.isfinite(value):
            raise _bad(text, accepted)
        if low is not None and (value < low or (low_open and value == low)):
            raise _bad(text, accepted)
        if high is not None and (value > high or (high_open and value == high)):
            raise _bad(text, accepted)
        return value

    parse.__name__ = name or "float_in"
    parse.accepted = accepted
    return parse


def int_at_least(low: int, *, high: int | None = None, name: str | None = None,
                 accepted: str | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: an int >= ``low`` (and < ``high`` if given)."""
    accepted = accepted or (f"an int >= {low}" if high is None else f"an int in [{low}, {high})")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _bad(text, accepted) from None
        if value < low or (high is not None and value >= high):
            raise _bad(text, accepted)
        return value

    parse.__name__ = name or "int_at_least"
    parse.accepted = accepted
    return parse


finite_float = float_in(name="finite_float")
nonneg_float = float_in(0.0, name="nonneg_float")
positive_float = float_in(0.0, low_open=True, name="positive_float")
unit_float = float_in(0.0, 1.0, name="unit_float")
positive_int = int_at_least(1, name="positive_int")
nonneg_int = int_at_least(0, name="nonneg_int")
seed_int = int_at_least(0, high=MAX_SEED, name="seed_int", accepted="an int in [0, 2**63)")


def image_size(text: str) -> int:
    """An argparse ``type=``: an image side in pixels, a positive multiple of 8 (the VAE's factor)."""
    accepted = "a positive multiple of 8 (pixels)"
    try:
        value = int(text)
    except ValueError:
        raise _bad(text, accepted) from None
    if value < 8 or value % 8:
        raise _bad(text, accepted)
    return value


def device_name(text: str) -> str:
    """An argparse ``type=``: a torch device this machine has: ``cpu``, ``cuda``, ``cuda:N``
    (N < the number of GPUs) or ``mps``, checked here rather than by a failing model load."""
    import torch

    available = ["cpu"]
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_cuda:
        available += ["cuda"] + [f"cuda:{i}" for i in range(min(n_cuda, 4))] + (["..."] if n_cuda > 4 else [])
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if has_mps:
        available.append("mps")
    here = f"; available here: {', '.join(available)}"
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", text)
    if not match or (match.group(1) != "cuda" and match.group(2) is not None):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or mps; got {_shown(text)}{here}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not n_cuda:
            why = "this torch is a CPU build" if torch.version.cuda is None else "torch finds no CUDA GPU"
            raise argparse.ArgumentTypeError(f"got {text}, but {why} (torch {torch.__version__}){here}")
        if index is not None and int(index) >= n_cuda:
            raise argparse.ArgumentTypeError(f"got {text}, but there are {n_cuda} CUDA devices{here}")
    if kind == "mps" and not has_mps:
        raise argparse.ArgumentTypeError(f"got {text}, but MPS is not available here{here}")
    return text


def existing(what: str = "file or folder", *, name: str | None = None) -> Callable[[str], Path]:
    """An argparse ``type=``: a path that exists (``what`` names it in the error)."""

    def parse(text: str) -> Path:
        path = Path(text)
        if not text or not path.exists():
            raise argparse.ArgumentTypeError(f"no {what} at {_shown(text)}")
        return path

    parse.__name__ = name or "existing"
    return parse


existing_path = existing(name="existing_path")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_folder(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or in the folders it would be created in), or None."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        return f"{base} is a file, not a folder"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"folder {base} is not writable"
    return None


def creatable_dir(text: str) -> str:
    """An argparse ``type=``: a folder that exists and is writable, or can be created."""
    if not text:
        raise argparse.ArgumentTypeError("must be a folder path; got ''")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    why = _writable_folder(path)
    if why:
        raise argparse.ArgumentTypeError(f"cannot create or write {text}: {why}")
    return text


def writable_file(text: str) -> str:
    """An argparse ``type=``: a file path in an existing, writable folder (it is written at the end
    of a run, so a bad path must fail before the run, not after it)."""
    if not text:
        raise argparse.ArgumentTypeError("must be a file path; got ''")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: not writable")
    return text


# -- the sampler's options ---------------------------------------------------------------------------


def add_sampler_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options of Algorithm 1 and of the run, with the paper's defaults."""
    g = parser.add_argument_group("AMDM (Algorithm 1)")
    g.add_argument("--steps", type=positive_int, default=50, help="T, DDIM steps (default 50)")
    window = g.add_mutually_exclusive_group()
    window.add_argument("--agg-steps", type=nonneg_int, default=None,
                        help=f"s, aggregate the first s steps, 0 <= s <= T (default {DEFAULT_AGG_STEPS}, "
                             "or T if smaller)")
    window.add_argument("--agg-window", type=nonneg_int, nargs=2, metavar=("START", "STOP"),
                        help="aggregate steps [START, STOP) instead of the first s (0 <= START <= STOP <= T)")
    g.add_argument("--w", type=unit_float, nargs="+", default=[0.5],
                   help="weights w_1..w_{N-1} in [0, 1] (default 0.5)")
    g.add_argument("--eta", type=nonneg_float, nargs="+", default=[0.3],
                   help="radial shift of eq. (7), >= 0, one value or one per model, latent-norm units (default 0.3)")
    g.add_argument("--mix", choices=("slerp", "lerp", "orthogonal_mix"), default="slerp")
    g.add_argument("--shift-mean", choices=("step", "aggregate"), default="step",
                   help="mean of the shift: mu_i(z_t^i) as in Algorithm 1 (step) or mu_i(z') as eq. (7) prints it")
    g.add_argument("--ddim-eta", type=nonneg_float, default=0.0,
                   help="DDIM eta >= 0 (0 deterministic, 1 DDPM variance)")
    g.add_argument("--shared-init", action="store_true", help="one z_T for all models (the earlier version)")
    g.add_argument("--continue-after-window", action="store_true",
                   help="models 2..N keep sampling on their own after the window (as Table 5 logs them)")
    g.add_argument("--cross-eps", action="store_true",
                   help="record eps_theta1(z, t, y_i) and eps_thetai(z_t^1, t, y_i) for the delta decomposition "
                        "(two more model calls per partner and step)")
    r = parser.add_argument_group("run")
    r.add_argument("--batch", type=positive_int, default=4, help="samples, one generator each (default 4)")
    r.add_argument("--seed", type=seed_int, default=0,
                   help="first seed; sample b uses seed + b, all in [0, 2**63) (default 0)")
    r.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="model and store dtype")
    r.add_argument("--out", type=Path, default=Path("data/runs") / f"{name}.zarr", help="trace store path")
    r.add_argument("--overwrite", action="store_true", help="replace an existing store")
    r.add_argument("--names", nargs="+", default=None, metavar="GLOB",
                   help="record only hook names matching these globs (default: all); each must match a hook")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def _agg_steps(args: argparse.Namespace) -> int:
    return min(DEFAULT_AGG_STEPS, args.steps) if args.agg_steps is None else args.agg_steps


def sampler_config(args: argparse.Namespace, n_models: int, **overrides):
    """A ``SamplerConfig`` from the parsed options, checked for ``n_models`` models (errors are
    the sampler's one-liners; ``check_sampler_args`` names the options first)."""
    from amdm_geom.sampling import SamplerConfig

    eta = args.eta[0] if len(args.eta) == 1 else tuple(args.eta)
    config = SamplerConfig(
        num_inference_steps=args.steps, agg_steps=_agg_steps(args),
        agg_window=tuple(args.agg_window) if args.agg_window else None,
        weights=tuple(args.w) if n_models > 1 else (), eta=eta, mix=args.mix, shift_mean=args.shift_mean,
        ddim_eta=args.ddim_eta, shared_init=args.shared_init, continue_after_window=args.continue_after_window,
        record_cross_eps=args.cross_eps, **overrides)
    config.check(n_models)
    return config


def check_sampler_args(args: argparse.Namespace, n_models: int, max_steps: int | None = None) -> None:
    """The sampler options that depend on each other or on the number of models (and
    ``--steps`` against the schedule's ``max_steps`` training timesteps, where known), each
    refused with a one-line ``OptionError`` naming the option, before anything is built or written."""
    steps = args.steps
    if max_steps is not None and steps > max_steps:
        raise OptionError("--steps", f"must be in [1, {max_steps}] (the schedule's training timesteps); got {steps}")
    if args.agg_steps is not None and args.agg_steps > steps:
        raise OptionError("--agg-steps", f"must be in [0, --steps] = [0, {steps}]; got {args.agg_steps}")
    if args.agg_window:
        start, stop = args.agg_window
        if not start <= stop <= steps:
            raise OptionError("--agg-window", f"must be START STOP with 0 <= START <= STOP <= --steps ({steps}); "
                                              f"got {start} {stop}")
    if n_models > 1 and len(args.w) != n_models - 1:
        raise OptionError("--w", f"takes {n_models - 1} weight(s) w_1..w_{{N-1}} for {n_models} models; "
                                 f"got {len(args.w)}: {' '.join(f'{w:g}' for w in args.w)}")
    if len(args.eta) not in (1, n_models):
        raise OptionError("--eta", f"takes one value or one per model ({n_models}); got {len(args.eta)}: "
                                   f"{' '.join(f'{e:g}' for e in args.eta)}")
    if args.seed + args.batch > MAX_SEED:
        raise OptionError("--seed", f"--seed {args.seed} with --batch {args.batch} uses seeds up to "
                                    f"{args.seed + args.batch - 1}; seeds must be in [0, 2**63)")
    config = sampler_config(args, n_models)
    if args.names is not None:
        from amdm_geom.sampling import planned_hook_names

        names = planned_hook_names(n_models, config)
        for glob in args.names:
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                shown = ", ".join(names[:6]) + (f", ..., {names[-1]}" if len(names) > 6 else "")
                raise OptionError("--names", f"{glob!r} matches no hook this run records; its {len(names)} "
                                             f"hook names are {shown} (globs such as 'model*.z_next' work)")


def check_output_path(path, overwrite: bool) -> None:
    """The store path, checked before anything is built (``amdm_geom.store.check_output_path``):
    one line if it exists without ``--overwrite``, is not a trace store, or cannot be created."""
    from amdm_geom import store

    store.check_output_path(path, overwrite)


def run_probe(build, args: argparse.Namespace, *, quiet: bool = False, after=None, n_models: int = 2,
              max_steps: int | None = None) -> Path:
    """Run a sampler on ``args.batch`` seeds into ``args.out``; return the store's path.

    ``build`` is a callable returning the ``AMDMSampler`` (or the sampler itself). In order: the
    sampler options are checked (``check_sampler_args`` for ``n_models`` models and at most
    ``max_steps`` steps), then the output
    path, and only then is ``build()`` called and the store created. ``after(output)`` is called
    with the ``SampleOutput`` (e.g. to decode images)."""
    from amdm_geom.sampling import AMDMSampler
    from amdm_geom.store import ZarrRecorder

    check_sampler_args(args, n_models, max_steps)
    check_output_path(args.out, args.overwrite)
    sampler = build if isinstance(build, AMDMSampler) else build()
    recorder = ZarrRecorder(args.out, overwrite=args.overwrite, names_filter=args.names)
    seeds = list(range(args.seed, args.seed + args.batch))
    start = time.perf_counter()
    with sampler.recording(recorder):
        out = sampler.sample(seeds, progress=not (args.no_progress or quiet))
    if not quiet:
        print(f"wrote {args.out} ({recorder.bytes_written / 1e6:.1f} MB, {out.model_calls} model calls, "
              f"{time.perf_counter() - start:.1f} s)")
    if after is not None:
        after(out)
    return Path(args.out)

"""Typed, self-validating specs: the one config language of the toolkit.

A spec is a frozen pydantic model (``Spec``) whose fields check themselves: the sampler's
settings (``amdm_geom.sampling.SamplerConfig``), each model family
(``amdm_geom.models.specs``), each probe and each ablation run. A spec round-trips through
JSON (``model_dump_json`` / ``model_validate_json``), which is how a trace store keeps the spec
it was made from, and the command line is generated from the specs' fields (``amdm_geom.app.cli``).

Every refusal is one ``SpecError`` (a ``ValueError``) of one line naming the field, what it
accepts and the value: ``num_inference_steps must be an int >= 1; got 0``. The field checks
below (``integer``, ``real``, ``choice``, ``flag``, ``sequence``, ...) are ``BeforeValidator``\\ s
shared by every spec, so each rule is written once. Numbers may be Python, numpy or torch
scalars; they are kept as Python numbers, and sequences as tuples. Text is parsed (``"0.5"`` ->
0.5) only when a spec is validated with ``context={"cli": True}``, as the command line does,
and its errors then show the text as typed (``got -1e-3``).

Nothing heavy is imported here: torch scalars are recognised only if torch is already loaded.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo

__all__ = ["MAX_SEED", "PREFIXED", "Spec", "SpecError", "as_number", "choice", "creatable_dir", "existing", "flag",
           "integer", "is_cli", "is_int", "is_prefixed", "is_real", "is_sequence", "optional", "real", "seed",
           "sequence", "shown", "writable_file"]

#: Seeds are in [0, MAX_SEED): torch generators and numpy seed sequences take them all.
MAX_SEED = 2**63
_NO_VALUE = object()
_REF = re.compile(r"`(\w+(?:\.\w+)*)`")


# --------------------------------------------------------------------------------------------
# the error


class SpecError(ValueError):
    """A refused setting, one line: ``<field> <reason>; got <value>``.

    ``loc`` is the field's path inside the spec (``("sampler", "weights")``), ``reason`` says
    what is accepted (other fields may be named in it in backquotes, ``\\`batch\\``` or a dotted
    path ``\\`model_b.path\\```, so that the command line can show them as its options), ``value``
    is the refused value and ``count`` prefixes its length (``got 2: 0.5 0.5``)."""

    def __init__(self, reason: str, value: Any = _NO_VALUE, *, loc: tuple[str, ...] = (), count: bool = False):
        self.reason, self.value, self.loc, self.count = reason, value, tuple(loc), count
        super().__init__(self.text())

    def within(self, *outer: str) -> SpecError:
        """The same error, for a field of a spec nested at ``outer``."""
        return SpecError(self.reason, self.value, loc=(*outer, *self.loc), count=self.count)

    def text(self, name: Callable[[tuple[str, ...]], str] | None = None, *, cli: bool = False) -> str:
        """The line, with ``name(loc)`` for the field and each backquoted reference (default: the
        dotted path) and the value as Python shows it, or as typed on the command line."""
        name = name or ".".join
        reason = _REF.sub(lambda m: name(tuple(m.group(1).split("."))), self.reason)
        head = f"{name(self.loc)} {reason}" if self.loc else reason
        if self.value is _NO_VALUE:
            return head
        got = shown(self.value, cli=cli)
        if self.count and is_sequence(self.value):
            got = f"{len(self.value)}: {got}"
        return f"{head}; got {got}"

    def __str__(self) -> str:
        return self.text()


def shown(value: Any, *, cli: bool = False) -> str:
    """A value in an error line: ``repr`` for Python (``'3'``, ``(0.5, 0.5)``, ``nan``); on the
    command line text as typed and sequences space-separated (``0.5 0.5``)."""
    if not cli:
        return repr(as_number(value))
    if isinstance(value, str):
        return value if value and value.strip() == value and value.isprintable() else repr(value)
    if is_sequence(value):
        return " ".join(shown(v, cli=True) for v in value)
    return str(as_number(value))


def _from_validation_error(exc: ValidationError) -> SpecError:
    """The first error of pydantic's report as one ``SpecError``."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        return cause.within(*loc)
    if err["type"] == "missing":
        return SpecError("is required", loc=loc)
    if err["type"] == "extra_forbidden":
        return SpecError(f"is not a setting of {exc.title}", loc=loc)
    return SpecError(str(err["msg"]).rstrip(".").lower(), err.get("input", _NO_VALUE), loc=loc)


# --------------------------------------------------------------------------------------------
# the base class


class Spec(BaseModel):
    """A frozen, self-validating record that round-trips through JSON. Fields are checked when
    the spec is made (``SpecError``, one line); unknown fields are refused. A field may have an
    ``alias``: the name the command line gives it (``--steps`` for ``num_inference_steps``).
    Python code may use either name."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True,
                              loc_by_alias=False, use_attribute_docstrings=True, revalidate_instances="never")

    def __init__(self, /, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _from_validation_error(exc) from None

    # (pydantic then validates nested specs and ``model_validate`` input without calling this
    # ``__init__``, so that a validation context such as ``{"cli": True}`` reaches every field)
    __init__.__pydantic_base_init__ = True

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _from_validation_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes, **kwargs: Any):
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _from_validation_error(exc) from None

    def replace(self, **changes: Any):
        """A copy with ``changes``, checked like a new spec (pydantic's ``model_copy`` is not)."""
        return type(self).model_validate({**{k: getattr(self, k) for k in type(self).model_fields}, **changes})


class _Prefixed:
    """The type of ``PREFIXED``, a marker read by the command line (``amdm_geom.app.cli``)."""

    def __repr__(self) -> str:
        return "PREFIXED"


#: Marks a nested spec whose settings carry its field's name on the command line: a spec that
#: nests two specs of one kind, ``model_a: Annotated[PipelineSpec, PREFIXED]`` and
#: ``model_b: Annotated[PipelineSpec | None, PREFIXED] = None``, gets ``--model-a.guidance`` and
#: ``--model-b.guidance`` (an optional one is None unless one of its options is given). Other nested
#: specs (``sampler``, ``run``, a model family) show their fields without a prefix.
PREFIXED = _Prefixed()


def is_prefixed(field) -> bool:
    """Whether a pydantic field (``Spec.model_fields[name]``) is marked ``PREFIXED``."""
    return any(m is PREFIXED for m in field.metadata)


# --------------------------------------------------------------------------------------------
# scalars


def is_sequence(value) -> bool:
    """A tuple, list, or 1-d numpy array or torch tensor."""
    torch = sys.modules.get("torch")
    return isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1) or (
        torch is not None and isinstance(value, torch.Tensor) and value.ndim == 1)


def as_number(value):
    """A numpy or torch real scalar (or 0-d array or tensor) as a Python int or float; bools,
    complex numbers and everything else unchanged."""
    if isinstance(value, (bool, np.bool_)):
        return value
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.ndim == 0 and value.dtype != torch.bool and not value.is_complex():
            return value.item()
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite Python int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_cli(info: ValidationInfo | None) -> bool:
    """Whether the spec is being validated from command-line text (``context={"cli": True}``)."""
    return bool(info is not None and isinstance(info.context, dict) and info.context.get("cli"))


def _parsed(value, info, kind: type):
    """``value`` as ``kind`` if it is command-line text, else as a Python number; ``None`` if the
    text is not one."""
    if isinstance(value, str):
        if not is_cli(info):
            return None
        try:
            return kind(value)
        except ValueError:
            return None
    return as_number(value)


def _range_text(kind: str, low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return kind


def _got(value):
    return value if isinstance(value, str) else as_number(value)


def integer(low: int | None = None, high: int | None = None, *, accepted: str | None = None) -> BeforeValidator:
    """An int in [low, high) (either end optional)."""
    accepted = accepted or _range_text("an int", low, None if high is None else high - 1, False, False)

    def check(value, info: ValidationInfo):
        v = _parsed(value, info, int)
        if not is_int(v) or (low is not None and v < low) or (high is not None and v >= high):
            raise SpecError(f"must be {accepted}", _got(value))
        return v

    return BeforeValidator(check)


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
         accepted: str | None = None) -> BeforeValidator:
    """A finite number (int or float, not a bool) in the given range; NaN and inf are refused."""
    accepted = accepted or _range_text("a finite number", low, high, low_open, high_open)

    def check(value, info: ValidationInfo):
        v = _parsed(value, info, float)
        ok = is_real(v) and not (low is not None and (v < low or (low_open and v == low))) and not (
            high is not None and (v > high or (high_open and v == high)))
        if not ok:
            raise SpecError(f"must be {accepted}", _got(value))
        return v

    return BeforeValidator(check)


def seed(accepted: str = "an int in [0, 2**63)") -> BeforeValidator:
    """A seed: an int in [0, 2**63)."""
    return integer(0, MAX_SEED, accepted=accepted)


def choice(*choices: str) -> BeforeValidator:
    """One of ``choices`` (text)."""

    def check(value, info: ValidationInfo):
        if not (isinstance(value, str) and value in choices):
            raise SpecError(f"must be one of {', '.join(choices)}", _got(value))
        return value

    return BeforeValidator(check)


def _flag(value, info: ValidationInfo):
    if isinstance(value, np.bool_):
        return bool(value)
    if not isinstance(value, bool):
        raise SpecError("must be True or False", _got(value))
    return value


#: True or False (numpy bools become Python bools).
flag = BeforeValidator(_flag)


def sequence(item: BeforeValidator, *, accepted: str, min_len: int = 0) -> BeforeValidator:
    """A sequence (tuple, list, 1-d array or tensor) of at least ``min_len`` values, each checked
    by ``item``; kept as a tuple. An element's error shows that element."""

    def check(value, info: ValidationInfo):
        if not is_sequence(value) or len(value) < min_len:
            raise SpecError(f"must be {accepted}", _got(value) if not is_sequence(value) else tuple(value))
        return tuple(item.func(v, info) for v in value)

    return BeforeValidator(check)


def optional(inner: BeforeValidator) -> BeforeValidator:
    """``None``, or what ``inner`` accepts."""
    return BeforeValidator(lambda value, info: None if value is None else inner.func(value, info))


# --------------------------------------------------------------------------------------------
# paths (checked where they are read or written: a command's own folders, a model's weights)


def existing(what: str = "file or folder") -> BeforeValidator:
    """A path that exists (``what`` names it in the error)."""

    def check(value, info: ValidationInfo):
        if isinstance(value, (str, Path)) and str(value) and Path(value).exists():
            return str(value)  # (the field's type makes it a Path, from Python and from JSON alike)
        if isinstance(value, (str, Path)):
            raise SpecError(f"must be an existing {what}; no {what} at {shown(str(value), cli=True)}")
        raise SpecError(f"must be an existing {what}", _got(value))

    return BeforeValidator(check)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _creatable(value, info: ValidationInfo):
    text = str(value) if isinstance(value, (str, Path)) else None
    if not text:
        raise SpecError("must be a folder path", _got(value) if text is None else "")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise SpecError("exists and is not a folder", text)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SpecError(f"cannot be created: {base} is a file, not a folder", text)
    if not os.access(base, os.W_OK | os.X_OK):
        raise SpecError(f"cannot be created: folder {base} is not writable", text)
    return text


#: A folder that exists and is writable, or can be created.
creatable_dir = BeforeValidator(_creatable)


def _writable(value, info: ValidationInfo):
    text = str(value) if isinstance(value, (str, Path)) else None
    if not text:
        raise SpecError("must be a file path", _got(value) if text is None else "")
    path = Path(text)
    if path.is_dir():
        raise SpecError("is a folder, not a file", text)
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise SpecError(f"cannot be written: folder {parent} {what}", text)
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SpecError("cannot be written: not writable", text)
    return text


#: A file path in an existing, writable folder (written at the end of a run, so a bad path
#: must fail before the run).
writable_file = BeforeValidator(_writable)

"""Specs as command lines (tyro), for ``amdm_geom.app.cli``: a spec's fields are its options, with
the help taken from their docstrings, checked by the spec itself.

A nested spec's fields appear without a prefix (``--steps``, not ``--sampler.steps``), under a
field's alias if it has one; a nested spec marked ``PREFIXED`` (``amdm_geom.core.spec``), as a
probe's two models of one kind, shows its fields under its field's name (``--model-a.guidance``),
and an optional one (``S | None``) is None unless one of its options is given. tyro passes the
options' text to the spec unparsed, so that the spec's own validators check it and an error names
the option and shows the value as typed (``usage_error``).
"""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal

from amdm_geom.core.spec import Spec, SpecError, is_prefixed

__all__ = ["UsageError", "options", "parse", "usage_error"]


class UsageError(ValueError):
    """A refused command line: reported by ``main`` as one line, exit code 2."""


class _Given(dict):
    """The options of one spec as given (text), for the spec to check."""


def _is_spec(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Spec)


def _metavar(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in (typing.Union, UnionType):
        return "|".join(_metavar(a) for a in args if a is not type(None))
    if origin is tuple:
        return f"{_metavar(args[0])} ..." if len(args) == 2 and args[1] is Ellipsis else " ".join(map(_metavar, args))
    return {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}.get(tp, "VALUE")


def _many(tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return True
    return origin in (typing.Union, UnionType) and any(_many(a) for a in args if a is not type(None))


def _optional(tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _optional(args[0])
    return tp is type(None) or (origin in (typing.Union, UnionType) and type(None) in args)


def _as_text(value) -> list[str]:
    if value is None:
        return ["None"]
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    return [str(value)]


def _nested(field) -> tuple[type[Spec] | None, bool]:
    """The spec a field nests (``S`` or ``S | None``), or None; and whether it may be None."""
    tp = field.annotation
    if _is_spec(tp):
        return tp, False
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    inner = [a for a in args if a is not type(None)]
    if origin in (typing.Union, UnionType) and type(None) in args and len(inner) == 1 and _is_spec(inner[0]):
        return inner[0], True
    return None, False


@functools.cache
def _or_none(cls: type[Spec]) -> type:
    """The command line's stand-in for an optional prefixed spec ``cls | None``: ``cls``'s options,
    none of them required; None unless one of them is given."""
    return type(f"{cls.__name__}OrNone", (), {"or_none_of": cls})


def _field_type(cls: type[Spec], name: str):
    """The type tyro shows for field ``name`` of ``cls``: a nested spec without a prefix, or under
    its field's name if marked ``PREFIXED`` (``_or_none`` where it may be None); a positional."""
    import tyro

    field = cls.model_fields[name]
    nested, maybe = _nested(field)
    if nested is not None and is_prefixed(field):
        return _or_none(nested) if maybe else nested
    if nested is not None:
        return Annotated[field.annotation, tyro.conf.OmitArgPrefixes]
    if (field.json_schema_extra or {}).get("positional"):
        return Annotated[field.annotation, tyro.conf.Positional, tyro.conf.arg(metavar=_option(cls, name))]
    return field.annotation


def _struct(cls: type[Spec], default, *, or_none: bool = False):
    """tyro's struct of spec ``cls``: its fields as given (text), for the spec to check; with
    ``or_none``, None where none of them is given."""
    import tyro
    from tyro.constructors import StructConstructorSpec, StructFieldSpec

    fields, defaults = [], {}
    required = {field.alias or name for name, field in cls.model_fields.items() if field.is_required()}
    for name, field in cls.model_fields.items():
        tp = _field_type(cls, name)
        if isinstance(default, cls) and name in default.model_fields_set:
            value = getattr(default, name)  # (set explicitly, e.g. a probe's own --out)
        elif or_none and field.is_required():
            value = None
        else:
            value = tyro.MISSING if field.is_required() else field.get_default(call_default_factory=True)
        if value is None and hasattr(tp, "or_none_of"):
            value = tyro.MISSING  # (its options' own defaults: None unless one is given)
        elif value is None and not _optional(tp):  # (a default filled in by the spec, e.g. agg_steps)
            tp = tp | None
        key = field.alias or name
        defaults[key] = value
        fields.append(StructFieldSpec(name=key, type=tp, default=value, helptext=field.description))

    def given(**values):
        untouched = {k for k in values if values[k] is defaults[k]}
        if or_none and untouched == set(values):
            return None
        return _Given({k: v for k, v in values.items() if not (or_none and k in required and k in untouched)})

    given.__doc__ = (cls.__doc__ or "").split("\n\n")[0]  # (its first paragraph)
    return StructConstructorSpec(instantiate=given, fields=tuple(fields))


def _registry():
    """tyro rules: a spec is a struct of its fields (nested specs without a prefix unless marked
    ``PREFIXED``), and every other value is passed on as the text given."""
    from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec

    registry = ConstructorRegistry()

    @registry.primitive_rule
    def text(info):
        tp = info.type
        if tp is bool or tp is type(None) or _is_spec(tp) or hasattr(tp, "or_none_of"):
            return None
        many = _many(tp)
        return PrimitiveConstructorSpec(nargs="*" if many else 1, metavar=_metavar(tp),
                                        instance_from_str=tuple if many else (lambda args: args[0]),
                                        is_instance=lambda value: True, str_from_instance=_as_text)

    @registry.struct_rule
    def spec(info):
        cls = info.type
        if isinstance(cls, type) and hasattr(cls, "or_none_of"):
            return _struct(cls.or_none_of, info.default, or_none=True)
        return _struct(cls, info.default) if _is_spec(cls) else None

    return registry


def _option(cls: type[Spec], name: str, prefix: str = "") -> str:
    field = cls.model_fields[name]
    if (field.json_schema_extra or {}).get("positional"):
        return (field.alias or name).upper()
    return "--" + prefix + (field.alias or name).replace("_", "-")


def _prefix(field, name: str, prefix: str) -> str:
    """The prefix of the options of a spec nested in field ``name`` (after ``prefix``)."""
    return f"{prefix}{(field.alias or name).replace('_', '-')}." if is_prefixed(field) else prefix


def options(cls: type[Spec], prefix: str = "") -> dict[str, str]:
    """Field -> its option (``--steps``) or positional's metavar (``STORE``), over the spec and
    its nested specs: their fields appear without a prefix (the key is the field's name), or, in a
    field marked ``PREFIXED``, under its name (``model_a.guidance`` -> ``--model-a.guidance``)."""
    out = {}
    for name, field in cls.model_fields.items():
        nested, _ = _nested(field)
        if nested is None:
            out[name] = _option(cls, name, prefix)
        elif is_prefixed(field):
            out.update({f"{name}.{k}": v for k, v in options(nested, _prefix(field, name, prefix)).items()})
        else:
            out.update(options(nested, prefix))
    return out


def _option_at(cls: type[Spec], loc: tuple[str, ...]) -> str | None:
    """The option of the field at ``loc`` (a path through nested specs), or None."""
    prefix = ""
    for i, name in enumerate(loc):
        field = cls.model_fields.get(name)
        if field is None:
            return None
        if i == len(loc) - 1:
            return _option(cls, name, prefix)
        nested, _ = _nested(field)
        if nested is None:
            return None
        prefix, cls = _prefix(field, name, prefix), nested
    return None


def usage_error(exc: SpecError, cls: type[Spec]) -> UsageError:
    """``exc`` as the command line shows it: ``argument --steps: must be an int >= 1; got 0``.
    Another field named in the reason is looked up beside the refused one first."""
    flat = options(cls)

    def name(loc: tuple[str, ...]) -> str:
        if not loc:
            return ""
        found = _option_at(cls, loc) or (_option_at(cls, (*exc.loc[:-1], *loc)) if len(loc) == 1 else None)
        return found or flat.get(loc[-1], "--" + loc[-1].replace("_", "-"))

    body = SpecError(exc.reason, exc.value, count=exc.count).text(name, cli=True)
    return UsageError(f"argument {name(exc.loc)}: {body}" if exc.loc else body)


def _parse_error_hook():
    """tyro's hook for the errors it finds itself (an option without its value, a required
    option missing): raise them as one line instead of its box. (A private tyro API; without it,
    such errors are reported by ``parse`` in one generic line.)"""
    try:
        from tyro import _errors
    except ImportError:  # pragma: no cover - an older or newer tyro
        return None

    def shown(argument) -> str:
        try:
            return argument.display_name()
        except Exception:  # noqa: BLE001 - (a private structure that may change)
            return str(argument)

    def hook(event):
        missing = getattr(event, "missing_arguments", None)
        if missing:
            raise UsageError("the following arguments are required: " + ", ".join(shown(a.arg) for a in missing))
        argument = getattr(event, "argument", None)
        if argument is not None:
            raise UsageError(f"argument {shown(argument)}: {getattr(event, 'message', None) or 'expected a value'}")
        tokens = getattr(event, "tokens", None)
        if tokens:
            raise UsageError(f"unrecognized arguments: {' '.join(tokens)}")
        raise UsageError(f"the options could not be read ({type(event).__name__})")

    return _errors.on_parse_error(hook)


def parse(cls: type[Spec], args: list[str], *, prog: str, description: str | None = None) -> Spec:
    """The spec ``cls`` from command-line ``args`` (tyro), checked by the spec itself. ``--help``
    prints the help and exits 0; a bad option raises ``UsageError`` (one line)."""
    import contextlib

    import tyro

    wants_help = any(a in ("-h", "--help") for a in args)
    hook = _parse_error_hook() or contextlib.nullcontext()
    try:
        with hook:
            given, unknown = tyro.cli(cls, args=args, prog=prog, description=description, registry=_registry(),
                                      return_unknown_args=True, console_outputs=wants_help)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise UsageError(f"the options could not be read; see '{prog} --help'") from None
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return cls.model_validate(given, context={"cli": True})
    except SpecError as exc:
        raise usage_error(exc, cls) from None

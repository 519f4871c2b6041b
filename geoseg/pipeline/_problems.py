"""Pydantic's validation errors as job-file problems: ``yaml.path: what is wrong; the fix``.

:func:`problems_of` turns every error of a :class:`pydantic.ValidationError` into one line
that names its YAML path (``steps.predict.overlap``, ``inputs[1].image``) and says what is
wrong in a few words: a choice lists the allowed values, a bound names the bound, an
unknown key suggests the closest known key.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from geoseg.options import choices_of
from geoseg.pipeline._inputs import INPUT_KINDS
from geoseg.pipeline._sections import Section, describe

__all__ = ["problems_of"]

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _plain(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and ``| None``."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        args = [a for a in get_args(tp) if a is not type(None)]
        if type(None) in get_args(tp) and len(args) == 1:
            tp = args[0]
            continue
        return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields_by_key(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {f.alias or name: f for name, f in model.model_fields.items()}


def _tagged(tp: Any) -> dict[str, Any]:
    out = {}
    for arg in get_args(tp):
        for meta in getattr(arg, "__metadata__", ()):
            tag = getattr(meta, "tag", None)
            if isinstance(tag, str):
                out[tag] = arg
    return out


class _Where(typing.NamedTuple):
    path: str
    section: type[BaseModel] | None
    field: FieldInfo | None


def _walk(root: type[BaseModel], loc: tuple[int | str, ...]) -> _Where:
    """The YAML path of ``loc``, the section holding its last key and that key's field."""
    path = ""
    tp: Any = root
    section: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for part in loc:
        tp = _plain(tp)
        if _is_model(tp):
            section = tp
            path = f"{path}.{part}" if path else str(part)
            field = _fields_by_key(tp).get(str(part))
            tp = field.annotation if field is not None else None
        elif isinstance(part, int):
            path = f"{path}[{part}]"
            args = get_args(tp)
            tp, field = (args[0] if args else None), None
        else:  # the tag of a tagged union: no key of its own
            tp = _tagged(tp).get(part)
    return _Where(path, section, field)


def _bounds(field: FieldInfo | None) -> tuple[Any, Any]:
    """The ``Ge`` and ``Le`` bounds of a field (of its type, or of its ``| None`` part)."""
    if field is None:
        return None, None
    metas: list[Any] = list(field.metadata)
    tp = field.annotation
    for arg in (tp, *get_args(tp)):
        metas += list(getattr(arg, "__metadata__", ()))
    lo = next((m.ge for m in metas if isinstance(m, Ge)), None)
    hi = next((m.le for m in metas if isinstance(m, Le)), None)
    return lo, hi


def _unknown_key(key: str, section: type[BaseModel] | None) -> str:
    if section is None:
        return "unknown key"
    known = list(_fields_by_key(section))
    if issubclass(section, Section):
        canonical = section.canonical_key(key)
        if canonical in known and canonical != key:
            return f"given together with {canonical}; keep one"
        known += list(section.job_aliases)
    close = difflib.get_close_matches(key.replace("-", "_"), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(known)}"


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{describe(value)} is not one of {', '.join(allowed)}{hint}"


def _message(err: Mapping[str, Any], where: _Where, hints: Mapping[str, str]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "job":
        return str(ctx["message"])
    if kind == "missing":
        return f"missing; {hints.get(where.path, 'this key is required')}"
    if kind == "extra_forbidden":
        return _unknown_key(str(err["loc"][-1]), where.section)
    if kind == "literal_error":
        allowed = choices_of(where.field.annotation) if where.field is not None else None
        return _choice(value, allowed) if allowed else f"{describe(value)}: {err['msg']}"
    if kind in ("greater_than_equal", "less_than_equal"):
        lo, hi = _bounds(where.field)
        if lo is not None and hi is not None:
            return f"{value} must be between {lo:g} and {hi:g}"
        if kind == "greater_than_equal":
            return f"{value} must be >= {ctx.get('ge')}"
        return f"{value} must be <= {ctx.get('le')}"
    if kind == "finite_number":
        return f"{value} must be a finite number"
    if kind == "too_short":
        n = int(ctx.get("min_length", 1))
        return f"expected at least {n} entr{'y' if n == 1 else 'ies'}, got an empty list"
    if kind == "input_kind":
        if not isinstance(value, dict):
            return f"expected a mapping with potsdam, glob, files or image; got {describe(value)}"
        found = ", ".join(k for k in INPUT_KINDS if k in value) or "none"
        return f"give exactly one of {', '.join(INPUT_KINDS)} (found {found})"
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {describe(value)}"
    return str(err["msg"])


def problems_of(
    exc: ValidationError, root: type[BaseModel], *, hints: Mapping[str, str] | None = None
) -> list[str]:
    """One line per error of ``exc``: ``yaml.path: message``.

    Args:
        exc: The errors of validating data with ``root``.
        root: The model that was validated (its fields give paths, choices and bounds).
        hints: Extra words for a missing key, by YAML path.
    """
    out = []
    for err in exc.errors(include_url=False):
        where = _walk(root, tuple(err["loc"]))
        path = where.path
        ctx = err.get("ctx") or {}
        if err["type"] == "job" and "key" in ctx:
            path = f"{path}.{ctx['key']}" if path else str(ctx["key"])
        msg = _message(err, where, hints or {})
        out.append(f"{path or '(top level)'}: {msg}")
    return out

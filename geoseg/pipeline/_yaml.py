"""Reading a job file: safe YAML with YAML 1.2 integers and duplicate keys reported.

YAML 1.1 reads ``2_13`` as the integer 213 and ``017`` as an octal 15; job files are read
with YAML 1.2 integers (no ``_`` separators, no sexagesimal or octal forms), so Potsdam
tile ids need no quotes and a number never changes its value silently. A key given twice
in one mapping is a problem (``line N: key 'output' is given twice; keep one``), not a
silent overwrite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_job_yaml"]


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 integers and duplicate-key detection."""

    duplicates: list[str]


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in resolvers if r[0] != "tag:yaml.org,2002:int"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:
            continue
        if dup:
            loader.duplicates.append(
                f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one"
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_job_yaml(path: Path) -> tuple[Any, list[str], list[str]]:
    """The data of a job file, its duplicate-key problems and its fatal problems.

    Returns:
        ``(data, duplicates, fatal)``: ``fatal`` holds one line when the file cannot be
        read or is not YAML (``data`` is then None).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [], [f"cannot read the job file ({exc})"]
    try:
        loader = _Loader(text)  # refuses control characters already
    except yaml.YAMLError as exc:
        return None, [], [_yaml_problem(exc)]
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        return None, [], [_yaml_problem(exc)]
    finally:
        loader.dispose()
    return data, loader.duplicates, []


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``not valid YAML at line L, column C: PROBLEM; fix the file``, one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"not valid YAML at {where}: {problem}; fix the file"
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        where = f"character {exc.position + 1}"
        return f"not valid YAML at {where}: {exc.reason} (#x{char:04x}); fix the file"
    return f"not valid YAML: {' '.join(str(exc).split())[:200]}; fix the file"

"""The plan of the house: one job per module, no private names across modules, no orphans."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "geoseg"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(path: Path, name: str) -> list[tuple[str, str]]:
    """(module, imported name) pairs of a module, relative imports resolved."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                mod = f"{base}.{mod}" if mod else base
            found += [(mod, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names]
    return found


def test_no_module_is_over_600_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_no_private_name_is_imported_across_modules() -> None:
    bad = []
    for name, path in _modules().items():
        for mod, imported in _imports(path, name):
            if (
                mod.startswith("geoseg")
                and imported.startswith("_")
                and not (imported.startswith("__") and imported.endswith("__"))
            ):
                bad.append(f"{name}: from {mod} import {imported}")
    assert bad == []


def test_nothing_under_geoseg_is_orphaned() -> None:
    mods = _modules()
    used: set[str] = set()
    for name, path in mods.items():
        for mod, imported in _imports(path, name):
            used.add(mod)
            used.add(f"{mod}.{imported}")
    # commands are registered by module path in geoseg.cli.main
    from geoseg.cli.main import COMMANDS

    used |= {target.split(":")[0] for target in COMMANDS.values()}
    used |= {u.rsplit(".", k)[0] for u in list(used) for k in range(1, u.count(".") + 1)}
    # the package, `python -m geoseg.cli` and the GPU check's `python -m geoseg.bench.device`
    entry = {"geoseg", "geoseg.cli.__main__", "geoseg.bench.device"}
    orphans = [n for n in mods if n not in entry and n not in used]
    assert orphans == []

"""Tiny jobs for the pipeline tests: synthetic Potsdam scenes, an untrained checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from geoseg.schema import POTSDAM

BANDS = ("red", "green", "blue", "nir", "ndsm")


def make_checkpoint(
    path: Path, *, tile_size: int = 128, seed: int = 0, extra_outputs: tuple[str, ...] = ()
) -> Path:
    """An untrained fcn_resnet18 checkpoint (fixed seed) for the five default bands."""
    import torch

    from geoseg.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(seed)
    ckpt = Checkpoint.untrained(
        "fcn_resnet18",
        bands=BANDS,
        mean=(110.0, 110.0, 110.0, 110.0, 2.0),
        std=(50.0, 50.0, 50.0, 50.0, 3.0),
        schema=POTSDAM,
        tile_size=tile_size,
        gsd=0.05,
        extra_outputs=extra_outputs,
    )
    return save_checkpoint(ckpt, path)


def shared_checkpoint(factory: Any) -> Path:
    """One checkpoint (tile size 128) for the whole test session (``tmp_path_factory``)."""
    path = Path(factory.getbasetemp()) / "pipeline-model.pt"
    if not path.exists():
        make_checkpoint(path, tile_size=128)
    return path


def make_data(root: Path, *, scenes: int = 3, size: int = 256, seed: int = 5) -> list[str]:
    """Synthetic scenes in the Potsdam layout at ``root``; their tile ids."""
    from geoseg.synth import synthesize

    return list(synthesize(root, scenes=scenes, size=size, seed=seed).scene_ids)


def job_dict(data: Path, model: Path, output: Path | str, **overrides: Any) -> dict[str, Any]:
    """A job that predicts, vectorizes and evaluates every scene of ``data``."""
    job: dict[str, Any] = {
        "inputs": [{"potsdam": str(data)}],
        "model": str(model),
        "output": str(output),
        "workers": 2,
        "steps": {
            "predict": {"tile_size": 128, "overlap": 16},
            "vectorize": {"classes": ["building", "road"], "min_area": 1},
            "evaluate": {"eroded": 2, "ignore_class": ["clutter"]},
        },
    }
    job.update(overrides)
    return job


def write_job(path: Path, job: dict[str, Any] | str) -> Path:
    """Write a job file (a dict is dumped as YAML, text is written as is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(job if isinstance(job, str) else yaml.safe_dump(job, sort_keys=False))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpkg_digest(path: Path) -> str:
    """Digest of a GeoPackage's layers (geometry WKB and attributes), not its file bytes.

    GeoPackages record the time they were written (``gpkg_contents.last_change``, the
    ``update_time`` of the QGIS styles), so identical layers written twice differ in their
    bytes; those times are left out.
    """
    import pyogrio

    h = hashlib.sha256()
    for name, _ in sorted(pyogrio.list_layers(path).tolist()):
        df = pyogrio.read_dataframe(path, layer=name)
        h.update(name.encode())
        attrs = df.drop(columns=[c for c in ("geometry", "update_time") if c in df.columns])
        h.update(attrs.to_json(orient="records").encode())
        if "geometry" in df.columns:
            for g in df.geometry:
                h.update(g.wkb)
    return h.hexdigest()


def product_digests(root: Path) -> dict[str, str]:
    """Digests of a run's products.

    Left out: hidden files, the manifest and the predict JSON sidecars (they hold times).
    """
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or p.name in ("manifest.json", "run.lock") or "/." in f"/{rel}":
            continue
        if rel.startswith("maps/") and p.suffix == ".json":
            continue
        out[rel] = gpkg_digest(p) if p.suffix == ".gpkg" else sha(p)
    return out


def manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text())

"""The files a run writes beside its checkpoint, and reading them back on ``--resume``.

* ``OUT`` (e.g. ``model.pt``): the best checkpoint (:func:`build_checkpoint`);
* ``OUT.resume`` (:func:`resume_path_for`): model, optimizer, scheduler, epoch, RNG states,
  best so far and the metric history, rewritten atomically after every epoch
  (:func:`save_resume`, :func:`load_resume`); only the options of :data:`RESUMABLE_CHANGES`
  may differ on resumption (:func:`check_resumable`);
* the metrics CSV (:func:`log_path_for`, :func:`write_log`) and the training-curve PNG drawn
  from it (:func:`curves_path_for`, :func:`geoseg.train._curves.write_curves`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg._io import atomic_path, check_output_path
from geoseg._torch import safe_load
from geoseg.checkpoint import Checkpoint
from geoseg.errors import CheckpointError, ConfigError, OutputExistsError
from geoseg.train._config import TrainConfig
from geoseg.train._contact import CONTACT
from geoseg.train._plan import TrainPlan

__all__ = [
    "RESUMABLE_CHANGES",
    "RESUME_FORMAT",
    "RESUME_VERSION",
    "build_checkpoint",
    "check_outputs",
    "check_resumable",
    "curves_path_for",
    "load_resume",
    "log_path_for",
    "resume_path_for",
    "save_resume",
    "write_log",
]

RESUME_FORMAT = "geoseg-train-resume"
RESUME_VERSION = 1

# Options that may change between an interrupted run and its resumption: they do not
# change the result (workers: samples are seeded per sample; cache: memory only).
RESUMABLE_CHANGES = frozenset({"device", "workers", "cache"})


def resume_path_for(out: str | os.PathLike[str]) -> Path:
    """The resume state of a run writing ``out``: ``model.pt`` -> ``model.pt.resume``."""
    p = Path(out)
    return p.with_name(p.name + ".resume")


def log_path_for(out: str | os.PathLike[str]) -> Path:
    """Where the per-epoch metrics go: ``model.pt`` -> ``model.metrics.csv``."""
    p = Path(out)
    return p.with_name(p.stem + ".metrics.csv")


def curves_path_for(out: str | os.PathLike[str]) -> Path:
    """Where the training-curve picture goes: ``model.pt`` -> ``model.curves.png``."""
    p = Path(out)
    return p.with_name(p.stem + ".curves.png")


def check_outputs(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a run may write ``out`` (never clobber unless ``overwrite``).

    ``out``, its resume state, its metrics CSV and its curves PNG must be files that can be
    created: no parent of theirs a file, no folder in their place.

    Raises:
        ConfigError: Both ``resume`` and ``overwrite``.
        OutputError: ``out``, its resume state, its metrics CSV or its curves PNG cannot be
            created.
        CheckpointError: ``resume`` without a resume state.
        OutputExistsError: ``out`` or its resume state exists, and neither flag is set.
    """
    resume_file = resume_path_for(out)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other; choose one")
    for p in (out, resume_file, log_path_for(out), curves_path_for(out)):
        check_output_path(p, kind="file")
    if resume:
        if not resume_file.is_file():
            raise CheckpointError(
                f"{resume_file}: no resume state to continue from; run without --resume"
            )
        return
    if not overwrite:
        for p in (out, resume_file):
            if p.exists():
                raise OutputExistsError(
                    f"{p}: output already exists; pass --resume to continue that run, "
                    "--overwrite to start afresh, or choose another -o"
                )


def write_log(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the metrics CSV atomically: the union of the rows' keys, None as empty."""
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(buf.getvalue())


def load_resume(path: Path) -> dict[str, Any]:
    """The saved state of an interrupted run.

    Raises:
        CheckpointError: Unreadable, not a resume file, or of another format version.
    """
    state = safe_load(
        path,
        what="training resume state",
        hint="start again without --resume (and with --overwrite)",
    )
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path}: not a geoseg training resume file")
    if state.get("version") != RESUME_VERSION:
        raise CheckpointError(f"{path}: resume format {state.get('version')!r} is not supported")
    return state


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    """Check that ``config`` may continue the run saved with config ``saved``.

    Raises:
        ConfigError: An option other than those of :data:`RESUMABLE_CHANGES` differs.
    """
    now = config.to_dict()
    # an option added since the run was saved: it ran with that option's default
    saved = {**TrainConfig().to_dict(), **saved}
    changed = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    )
    if changed:
        k = changed[0]
        raise ConfigError(
            f"{path}: cannot resume with different options ({k}: was {saved.get(k)!r}, now "
            f"{now.get(k)!r}); resume with the options of the interrupted run, or start a new "
            "run with --overwrite"
        )


def build_checkpoint(
    model: nn.Module,
    spec: dict[str, Any],
    plan: TrainPlan,
    mean: Sequence[float],
    std: Sequence[float],
    row: Mapping[str, Any],
    config: TrainConfig,
    store: str | os.PathLike[str],
) -> Checkpoint:
    """The checkpoint of an epoch: weights on the CPU, the plan's data, the epoch's metrics."""
    return Checkpoint(
        arch=spec,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        bands=plan.bands,
        mean=tuple(mean),
        std=tuple(std),
        schema=plan.schema,
        tile_size=plan.crop if plan.crop is not None else plan.model_chip,
        gsd=plan.gsd,
        metrics={
            **{k: v for k, v in row.items() if not k.startswith("iou_")},
            "val_iou": {name: row[f"iou_{name}"] for name in plan.schema.classes},
            "train_scenes": list(plan.train_scenes),
            "val_scenes": list(plan.val_scenes),
            "train_chips": len(plan.train_paths),
            "val_chips": len(plan.val_paths),
            "store": str(Path(store).resolve()),
            **({"contact_pos_weight": plan.contact_pos_weight} if plan.contact else {}),
        },
        config=config.to_dict(),
        extra_outputs=(CONTACT,) if plan.contact else (),
    )


def save_resume(
    path: Path,
    config: TrainConfig,
    epoch: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    cuda: bool,
    best_miou: float | None,
    best_epoch: int,
    mean: Sequence[float],
    std: Sequence[float],
    history: Sequence[Mapping[str, Any]],
) -> None:
    """Write the resume state of the run after ``epoch`` atomically (see :func:`load_resume`)."""
    state = {
        "format": RESUME_FORMAT,
        "version": RESUME_VERSION,
        "config": config.to_dict(),
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "best_miou": best_miou,
        "best_epoch": best_epoch,
        "mean": list(mean),
        "std": list(std),
        "history": [dict(r) for r in history],
    }
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)

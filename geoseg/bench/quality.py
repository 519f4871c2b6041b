"""Training-quality benchmark on synthetic Potsdam-like scenes (not a unit test).

:func:`bench_quality` (``geoseg bench quality --minutes 15``) synthesizes training scenes
(seed 0) and test scenes (seed 1) with :mod:`geoseg.synth`, tiles both with
:mod:`geoseg.tiles`, trains a small model within the time budget, then scores the best
checkpoint on every test chip (one confusion matrix, :func:`geoseg.train.evaluate_chips`),
and writes ``bench_train.json`` in its work folder.

The number of epochs is derived from the budget: after synthesis and tiling, what is left
(less a reserve for the test scoring) is the training's own time budget
(:attr:`geoseg.train.TrainConfig.minutes`, which times real steps and fits the epochs), so
the learning-rate schedule (one-cycle) is complete, whatever the machine's speed.

The test scenes are tiled without overlap into ``scene_size / chip`` squares, so the test
chips cover every test pixel exactly once; the model's predictions, made at the coarser
training GSD, are upsampled and scored against the labels at the original 5 cm.

OpenMP threads that spin while waiting slow a small machine down 3-20x; the ``geoseg``
command sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (a script that calls
:func:`bench_quality` should do the same).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from geoseg.options import Device

__all__ = ["QualityReport", "bench_quality", "synth_and_tile"]

logger = logging.getLogger(__name__)

REPORT_NAME = "bench_train.json"

TEST_RESERVE_S = 20.0
"""Seconds of the budget kept for scoring the test chips (at least; or 5 % of what is left)."""


@dataclass(frozen=True)
class QualityReport:
    """What :func:`bench_quality` measured.

    Attributes:
        path: The JSON report written in the work folder.
        result: Its content: budget, wall time and its parts, settings, best epoch, test
            scores (mIoU, mIoU without clutter, OA, mean F1, per-class IoU) and history.
        table: The per-class table of the test scores.
    """

    path: Path
    result: dict[str, Any]
    table: str

    def summary(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        test = self.result["test"]
        return [
            f"test scores ({self.result['settings']['test_chips']} test chips, 5 cm labels):",
            *self.table.splitlines(),
            f"test mIoU {test['miou']:.4f} (without clutter {test['miou_without_clutter']:.4f}), "
            f"OA {test['overall_accuracy']:.4f}; wall {self.result['wall_s']:.0f} s of "
            f"{self.result['budget_s']:.0f} s; report {self.path}",
        ]


def synth_and_tile(
    work: Path, name: str, *, scenes: int, size: int, seed: int, chip: int, overlap: int
) -> tuple[Path, float, float]:
    """Synthesize scenes into ``work/{name}_scenes`` and tile them into ``work/{name}_tiles``.

    Returns:
        The tile store, the seconds of synthesis and the seconds of tiling.
    """
    from geoseg.options import TileOptions
    from geoseg.raster import potsdam_scene
    from geoseg.synth import synthesize
    from geoseg.tiles import tile_scenes

    t0 = time.perf_counter()
    synth = synthesize(work / f"{name}_scenes", scenes=scenes, size=size, seed=seed, overwrite=True)
    t1 = time.perf_counter()
    specs = [potsdam_scene(synth.root, sid) for sid in synth.scene_ids]
    store = work / f"{name}_tiles"
    tile_scenes(
        specs,
        store,
        options=TileOptions(size=chip, overlap=overlap, min_valid=0.5),
        workers=2,
        overwrite=True,
    )
    return store, t1 - t0, time.perf_counter() - t1


def bench_quality(
    *,
    minutes: float = 15.0,
    workdir: str | os.PathLike[str] = "bench_train",
    train_scenes: int = 12,
    test_scenes: int = 3,
    val_scenes: int = 1,
    scene_size: int = 2048,
    chip: int = 1024,
    overlap: int = 0,
    downsample: int = 4,
    crop: int = 128,
    model: str = "unet",
    encoder: str | None = "resnet18",
    batch_size: int = 8,
    lr: float = 3e-3,
    loss: str = "ce+dice",
    class_weights: str = "none",
    epochs: int | None = None,
    workers: int = 0,
    device: Device = "cpu",
    threads: int | None = None,
    seed: int = 0,
) -> QualityReport:
    """Train on synthetic scenes within a time budget; score the model on unseen scenes.

    Args:
        minutes: Wall-time budget, all steps.
        workdir: Work folder: scenes, tile stores, the model and ``bench_train.json``.
        train_scenes: Synthetic training scenes (seed 0).
        test_scenes: Synthetic test scenes (seed 1).
        val_scenes: Of the training scenes, how many validate (the last ones by id).
        scene_size: Scene edge, 5 cm pixels.
        chip: Store chip edge, 5 cm pixels.
        overlap: Training store chip overlap.
        downsample: Model GSD = 5 cm x this.
        crop: Training crop, model pixels (0: whole chips).
        model: Registered architecture.
        encoder: Encoder of the smp models; None or empty: the model's default.
        batch_size: Chips per step.
        lr: Peak learning rate.
        loss: Loss spec.
        class_weights: ``none``, ``median_frequency`` or ``sqrt_median_frequency``.
        epochs: Epochs; None: as many as fit in the budget.
        workers: DataLoader worker processes.
        device: Training and test device.
        threads: torch threads (None: all).
        seed: Training seed.

    Returns:
        The report, also written to ``workdir/bench_train.json``.
    """
    import torch

    from geoseg.tiles import read_store
    from geoseg.train import TrainConfig, evaluate_chips, train

    if threads:
        torch.set_num_threads(threads)
    budget = minutes * 60.0
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    train_store, t_synth_train, t_tile_train = synth_and_tile(
        work, "train", scenes=train_scenes, size=scene_size, seed=0, chip=chip, overlap=overlap
    )
    test_store, t_synth_test, t_tile_test = synth_and_tile(
        work, "test", scenes=test_scenes, size=scene_size, seed=1, chip=chip, overlap=0
    )
    t_data = time.perf_counter() - t_start
    logger.info(
        "data: synth %.0f s + %.0f s, tiling %.0f s + %.0f s",
        t_synth_train, t_synth_test, t_tile_train, t_tile_test,
    )  # fmt: skip

    _, train_index = read_store(train_store)
    _, test_index = read_store(test_store)
    scenes = sorted(set(train_index["scene"]))
    val_ids = tuple(scenes[-val_scenes:]) if val_scenes else None
    config = TrainConfig(
        model=model,
        encoder=encoder or None,
        epochs=1,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        class_weights=class_weights,  # type: ignore[arg-type]
        val_scenes=val_ids,
        val_fraction=0.0,
        seed=seed,
        chip_size=crop or None,
        downsample=downsample,
        device=device,
        workers=workers,
        cache=True,
    )
    if epochs:
        config = replace(config, epochs=epochs)
    else:  # the training fits its epochs into what is left, less the test scoring's reserve
        left = budget - (time.perf_counter() - t_start)
        reserve = max(TEST_RESERVE_S, 0.05 * left)
        config = replace(config, minutes=max(left - reserve, 1.0) / 60.0)

    t_train0 = time.perf_counter()
    report = train(train_store, work / "model.pt", config=config, overwrite=True)
    t_train = time.perf_counter() - t_train0
    t_eval0 = time.perf_counter()
    metrics = evaluate_chips(
        report.checkpoint,
        test_store,
        batch_size=batch_size,
        device=report.device,
    )
    t_eval = time.perf_counter() - t_eval0
    total = time.perf_counter() - t_start
    no_clutter = type(metrics).from_confusion(
        metrics.confusion, metrics.class_names, ignore_classes=("clutter",)
    )
    result: dict[str, Any] = {
        "budget_s": budget,
        "wall_s": round(total, 1),
        "within_budget": total <= budget,
        "seconds": {
            "synth": round(t_synth_train + t_synth_test, 1),
            "tile": round(t_tile_train + t_tile_test, 1),
            "data_total": round(t_data, 1),
            "train": round(t_train, 1),
            "test_eval": round(t_eval, 1),
        },
        "device": report.device,
        "threads": torch.get_num_threads(),
        "load_average_start_end": [load_start, list(os.getloadavg())],
        "cpu_count": os.cpu_count(),
        "settings": {
            "train_scenes": train_scenes,
            "val_scenes": list(val_ids or ()),
            "test_scenes": test_scenes,
            "scene_size_px": scene_size,
            "chip_px": chip,
            "train_overlap_px": overlap,
            "train_chips": report.train_chips,
            "val_chips": report.val_chips,
            "test_chips": len(test_index),
            "config": config.to_dict(),
        },
        "budget": report.budget,
        "stopped_early": report.stopped_early,
        "best_epoch": report.best_epoch,
        "best_val_miou": report.best_val_miou,
        "test": {
            "miou": metrics.miou,
            "miou_without_clutter": no_clutter.miou,
            "overall_accuracy": metrics.overall_accuracy,
            "mean_f1": metrics.mean_f1,
            "iou": dict(zip(metrics.class_names, [float(v) for v in metrics.iou], strict=True)),
            "pixels": metrics.pixel_count,
        },
        "history": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in report.history
        ],
    }
    path = work / REPORT_NAME
    path.write_text(json.dumps(result, indent=2) + "\n")
    table = metrics.format_table()
    logger.info("test scores (%d test chips, 5 cm labels):\n%s", len(test_index), table)
    logger.info(
        "test mIoU %.4f (without clutter %.4f), OA %.4f; wall %.0f s of %.0f s; report %s",
        metrics.miou, no_clutter.miou, metrics.overall_accuracy, total, budget, path,
    )  # fmt: skip
    return QualityReport(path=path, result=result, table=table)

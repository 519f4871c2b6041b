"""Training benchmark on synthetic Potsdam-like scenes (not a unit test).

``python -m geoseg._bench_train --minutes 15`` synthesizes training scenes (seed 0) and test
scenes (seed 1) with :mod:`geoseg.synth`, tiles both with :mod:`geoseg.tiles`, trains a
small model on the CPU within the time budget, then scores the best checkpoint on every test
chip (one confusion matrix, :mod:`geoseg.metrics`), and writes ``bench_train.json``.

The number of epochs is derived from the budget: after synthesis and tiling, a few timed
training steps on random data estimate the seconds per chip, and as many epochs as fit in
what is left (less a reserve for validation and the test scoring) are run. The learning-rate
schedule (one-cycle) is then complete, whatever the machine's speed.

The test scenes are tiled without overlap into ``scene_size / chip`` squares, so the test
chips cover every test pixel exactly once; the model's predictions, made at the coarser
training GSD, are upsampled and scored against the labels at the original 5 cm.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting steal the CPU from each other and from any other
# process on a small machine (a 3-20x slowdown measured on 2 cores); let them sleep.
# This must happen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

logger = logging.getLogger("geoseg.bench_train")


def _synth_and_tile(
    work: Path, name: str, *, scenes: int, size: int, seed: int, chip: int, overlap: int
) -> tuple[Path, float, float]:
    from geoseg.scene import potsdam_scene
    from geoseg.synth import synthesize
    from geoseg.tiles import TileOptions, tile_scenes

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


def _timings(
    config: Any, in_channels: int, crop: int, model_chip: int, work: Path
) -> tuple[float, float, float]:
    """Seconds per chip of a training step and of validation, and per epoch of saving.

    Timed on random data. Training: the median of 3 steps after a warm-up step.
    Validation: the real scoring path (:func:`geoseg.train._evaluate`: forward pass, logits
    upsampled to the chips' resolution, confusion matrix), once. Saving: the resume state
    (model + optimizer) and the checkpoint written after an epoch.
    """
    import torch

    from geoseg.losses import build_loss
    from geoseg.models import build_model
    from geoseg.train import _evaluate, _train_step

    args = {} if config.encoder is None else {"encoder": config.encoder}
    model = build_model(config.model, in_channels=in_channels, num_classes=6, **args)
    weights = [1.0] * 6 if "wce" in config.loss else None
    loss_fn = build_loss(config.loss, num_classes=6, class_weights=weights)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n = config.batch_size
    x = torch.randn(n, in_channels, crop, crop)
    y = torch.randint(0, 6, (n, crop, crop))
    times = []
    for _ in range(4):
        t = time.perf_counter()
        _train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=torch.device("cpu"))
        times.append(time.perf_counter() - t)
    native = model_chip * config.downsample
    batch = [
        (
            torch.randn(n, in_channels, model_chip, model_chip),
            torch.randint(0, 6, (n, native, native)),
        )
    ]
    t = time.perf_counter()
    _evaluate(model, batch, device=torch.device("cpu"), num_classes=6, loss_fn=loss_fn)  # type: ignore[arg-type]
    t_eval = (time.perf_counter() - t) / n
    t = time.perf_counter()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, work / "probe.pt")
    torch.save(model.state_dict(), work / "probe.pt")
    t_save = time.perf_counter() - t
    (work / "probe.pt").unlink()
    return sorted(times[1:])[1] / n, t_eval, t_save


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) its report."""
    p = argparse.ArgumentParser(prog="python -m geoseg._bench_train", description=__doc__)
    p.add_argument("--minutes", type=float, default=15.0, help="Wall-time budget, all steps.")
    p.add_argument("--workdir", type=Path, default=Path("bench_train"))
    p.add_argument("--train-scenes", type=int, default=12)
    p.add_argument("--test-scenes", type=int, default=3)
    p.add_argument("--val-scenes", type=int, default=1, help="Of the training scenes.")
    p.add_argument("--scene-size", type=int, default=2048, help="Scene edge, 5 cm pixels.")
    p.add_argument("--chip", type=int, default=1024, help="Store chip edge, 5 cm pixels.")
    p.add_argument("--overlap", type=int, default=0, help="Training store chip overlap.")
    p.add_argument("--downsample", type=int, default=4, help="Model GSD = 5 cm x this.")
    p.add_argument("--crop", type=int, default=128, help="Training crop, model pixels.")
    p.add_argument("--model", default="unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--loss", default="ce+dice")
    p.add_argument("--class-weights", default="none", choices=["none", "median_frequency"])
    p.add_argument("--epochs", type=int, default=None, help="Default: as many as fit.")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="Training and test device (give --epochs off the CPU: the budget planning "
        "times steps on the CPU).",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--safety",
        type=float,
        default=0.75,
        help="Fraction of the time left that the planned epochs may take (the rest absorbs "
        "other processes slowing the run down).",
    )
    a = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("pyogrio", "rasterio", "geoseg.synth", "geoseg.tiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from geoseg.train import TrainConfig, evaluate_chips, train

    if a.threads:
        torch.set_num_threads(a.threads)
    budget = a.minutes * 60.0
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)

    train_store, t_synth_train, t_tile_train = _synth_and_tile(
        work, "train", scenes=a.train_scenes, size=a.scene_size, seed=0, chip=a.chip,
        overlap=a.overlap,
    )  # fmt: skip
    test_store, t_synth_test, t_tile_test = _synth_and_tile(
        work, "test", scenes=a.test_scenes, size=a.scene_size, seed=1, chip=a.chip, overlap=0
    )
    t_data = time.perf_counter() - t_start
    logger.info(
        "data: synth %.0f s + %.0f s, tiling %.0f s + %.0f s",
        t_synth_train, t_synth_test, t_tile_train, t_tile_test,
    )  # fmt: skip

    from geoseg.tiles import read_store

    meta, train_index = read_store(train_store)
    _, test_index = read_store(test_store)
    scenes = sorted(set(train_index["scene"]))
    val_scenes = tuple(scenes[-a.val_scenes :]) if a.val_scenes else None
    n_val = int(train_index["scene"].isin(val_scenes or ()).sum())
    n_train = len(train_index) - n_val
    model_chip = a.chip // a.downsample
    crop = a.crop or model_chip
    config = TrainConfig(
        model=a.model,
        encoder=a.encoder or None,
        epochs=1,
        batch_size=a.batch_size,
        lr=a.lr,
        loss=a.loss,
        class_weights=a.class_weights,
        val_scenes=val_scenes,
        val_fraction=0.0,
        seed=a.seed,
        chip_size=a.crop,
        downsample=a.downsample,
        device=a.device,
        workers=a.workers,
        cache=True,
    )
    if a.epochs:
        epochs = a.epochs
    else:
        sec_chip, eval_chip, save_s = _timings(config, len(meta["bands"]), crop, model_chip, work)
        first_epoch_io = 0.25 * (n_train + n_val)  # reading + downsampling before the cache
        left = budget - (time.perf_counter() - t_start)
        reserve = eval_chip * len(test_index) * 1.5 + first_epoch_io + 20.0
        per_epoch = sec_chip * n_train + eval_chip * n_val + save_s
        epochs = max(1, math.floor(a.safety * (left - reserve) / per_epoch))
        logger.info(
            "%.2f s per training chip (%d px crops), %.2f s per validation chip; %d train "
            "chips, %d val chips, %d test chips: %d epochs of ~%.0f s fit in the %.0f s left",
            sec_chip, crop, eval_chip, n_train, n_val, len(test_index), epochs, per_epoch, left,
        )  # fmt: skip
    config = TrainConfig(**{**asdict(config), "epochs": epochs})

    t_train0 = time.perf_counter()
    report = train(train_store, work / "model.pt", config=config, overwrite=True)
    t_train = time.perf_counter() - t_train0
    t_eval0 = time.perf_counter()
    metrics = evaluate_chips(
        report.checkpoint,
        test_store,
        batch_size=a.batch_size,
        device=report.device,  # type: ignore[arg-type]
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
            "train_scenes": a.train_scenes,
            "val_scenes": list(val_scenes or ()),
            "test_scenes": a.test_scenes,
            "scene_size_px": a.scene_size,
            "chip_px": a.chip,
            "train_overlap_px": a.overlap,
            "train_chips": report.train_chips,
            "val_chips": report.val_chips,
            "test_chips": len(test_index),
            "config": config.to_dict(),
        },
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
    (work / "bench_train.json").write_text(json.dumps(result, indent=2) + "\n")
    logger.info(
        "test scores (%d test chips, 5 cm labels):\n%s", len(test_index), metrics.format_table()
    )
    logger.info(
        "test mIoU %.4f (without clutter %.4f), OA %.4f; wall %.0f s of %.0f s; report %s",
        metrics.miou, no_clutter.miou, metrics.overall_accuracy, total, budget,
        work / "bench_train.json",
    )  # fmt: skip
    return result


if __name__ == "__main__":
    main()

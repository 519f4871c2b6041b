"""The training-curve picture of a run: losses and validation IoU per epoch, as a PNG.

:func:`write_curves` draws the rows of the metrics log (:func:`geoseg.train._loop.epoch_row`,
or the CSV read back) in two panels: training and validation loss on the left, validation
mIoU (thick) and each class's IoU in its schema colour on the right. A class colour too
light to see on white (impervious surfaces' white, car yellow) is drawn with a dark outline.
A run without validation has an empty right panel saying so.

matplotlib is imported inside the function, and only its object-oriented API with the Agg
canvas is used (no pyplot, no global backend switch), so that ``import geoseg`` stays fast
and a training run in a notebook or a thread does not touch the user's figures.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoseg._io import atomic_path
from geoseg.errors import SchemaError

__all__ = ["LIGHT_LUMINANCE", "write_curves"]

logger = logging.getLogger("geoseg.train")

LIGHT_LUMINANCE = 0.75
"""Relative luminance (0..1) above which a class colour gets a dark outline on white."""

_SIZE_IN = (11.0, 4.2)
_DPI = 100
_LOG_RATIO = 20.0
"""Largest / smallest loss above which the loss axis is logarithmic."""


def _num(value: object) -> float:
    """A metric as a float; None, an empty CSV cell or a non-number as NaN."""
    if value is None or value == "":
        return math.nan
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _epoch(row: Mapping[str, Any], i: int) -> int:
    """A row's epoch, or its position (1-based) when it has none."""
    e = _num(row.get("epoch"))
    return i + 1 if math.isnan(e) else int(e)


def _luminance(rgb: Sequence[int]) -> float:
    r, g, b = (c / 255.0 for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [_num(r.get(key)) for r in rows]


def _any(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def write_curves(
    history_rows: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    colours: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write the training curves of ``history_rows`` to the PNG ``path`` (atomically).

    Args:
        history_rows: One mapping per epoch with ``epoch``, ``train_loss``, ``val_loss``,
            ``val_miou`` and ``iou_<class>``; a missing value is None, NaN or ``""`` (rows
            read back from the metrics CSV work too).
        class_names: The classes, in schema order (their IoU columns are ``iou_<name>``).
        path: The PNG to write; replaced if it exists.
        colours: One RGB triple (0..255) per class, the schema's colours; None uses
            matplotlib's default cycle.

    Returns:
        ``path`` as a Path.

    Raises:
        SchemaError: ``colours`` does not have one colour per class.
        OutputError: ``path`` cannot be created (a parent is a file, a folder is there).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patheffects import Normal, Stroke
    from matplotlib.ticker import MaxNLocator

    t0 = time.perf_counter()
    path = Path(path)
    if colours is not None and len(colours) != len(class_names):
        raise SchemaError(
            f"{len(class_names)} classes but {len(colours)} colours; give one colour per class"
        )
    rows = list(history_rows)
    epochs = [_epoch(r, i) for i, r in enumerate(rows)]

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_iou = fig.subplots(1, 2)
    marker = "o" if len(rows) <= 30 else None

    # left: losses
    train_loss, val_loss = _series(rows, "train_loss"), _series(rows, "val_loss")
    ax_loss.plot(epochs, train_loss, color="tab:blue", marker=marker, ms=3, label="train loss")
    if _any(val_loss):
        ax_loss.plot(epochs, val_loss, color="tab:orange", marker=marker, ms=3, label="val loss")
    positive = [v for v in train_loss + val_loss if v > 0]
    if positive and max(positive) / min(positive) > _LOG_RATIO:
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right", fontsize="small")

    # right: validation mIoU and per-class IoU
    miou = _series(rows, "val_miou")
    per_class = {name: _series(rows, f"iou_{name}") for name in class_names}
    ax_iou.set_title("validation IoU")
    ax_iou.set_xlabel("epoch")
    if not _any(miou) and not any(_any(v) for v in per_class.values()):
        ax_iou.text(0.5, 0.5, "no validation", ha="center", va="center", fontsize="large",
                    color="0.4", transform=ax_iou.transAxes)  # fmt: skip
        ax_iou.set_xticks([])
        ax_iou.set_yticks([])
    else:
        for c, name in enumerate(class_names):
            kwargs: dict[str, Any] = {"lw": 1.5, "label": name}
            if colours is not None:
                rgb = colours[c]
                kwargs["color"] = tuple(v / 255.0 for v in rgb[:3])
                if _luminance(rgb) > LIGHT_LUMINANCE:
                    kwargs["path_effects"] = [Stroke(linewidth=3.5, foreground="0.25"), Normal()]
            ax_iou.plot(epochs, per_class[name], **kwargs)
        ax_iou.plot(epochs, miou, color="black", lw=3.0, marker=marker, ms=4, label="mIoU")
        if _any(miou):
            best = max(range(len(miou)), key=lambda i: -1.0 if math.isnan(miou[i]) else miou[i])
            ax_iou.axvline(epochs[best], color="0.5", ls=":", lw=1)
            ax_iou.set_title(f"validation IoU (best mIoU {miou[best]:.3f}, epoch {epochs[best]})")
        ax_iou.set_ylim(0.0, 1.0)
        ax_iou.grid(alpha=0.3)
        ax_iou.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small",
                      frameon=False)  # fmt: skip
    for ax in (ax_loss, ax_iou) if _any(miou) else (ax_loss,):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(epochs)) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)

    with atomic_path(path, overwrite=True, kind="file") as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")
    logger.debug("curves %s: %d epochs in %.2f s", path, len(rows), time.perf_counter() - t0)
    return path

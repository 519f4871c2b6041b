"""The training-curve PNG: drawn from the metric rows, written by train() beside the CSV."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import geoseg.train._loop as loop
from geoseg.errors import OutputError, SchemaError
from geoseg.schema import POTSDAM
from geoseg.train import TrainEvent, train
from geoseg.train._curves import write_curves
from geoseg.train._resume import curves_path_for
from tests.train_helpers import TINY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class InterruptError(Exception):
    pass


def _rows(n: int, *, val: bool = True, gap: int | None = None) -> list[dict[str, Any]]:
    """``n`` epochs of metric rows; no validation at all (``val``) or in epoch ``gap``."""
    out = []
    for e in range(1, n + 1):
        has_val = val and e != gap
        row: dict[str, Any] = {
            "epoch": e,
            "lr": 1e-3,
            "train_loss": 2.0 / e,
            "val_loss": 2.2 / e if has_val else None,
            "val_miou": 0.2 + 0.5 * (1 - 1 / e) if has_val else None,
            "val_oa": 0.5 if has_val else None,
        }
        for i, name in enumerate(POTSDAM.classes):
            row[f"iou_{name}"] = min(1.0, 0.1 * i + 0.4 * (1 - 1 / e)) if has_val else None
        out.append(row)
    return out


def _pixels(path: Path) -> np.ndarray:
    """The PNG's RGB pixels (H, W, 3), after checking it is a PNG of a sensible size."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        assert 600 <= im.width <= 2000 and 250 <= im.height <= 1000, im.size
        return np.asarray(im.convert("RGB"))


def _count(rgb: np.ndarray, colour: Sequence[int]) -> int:
    return int(np.count_nonzero((rgb == np.asarray(colour, dtype=np.uint8)).all(axis=-1)))


def test_each_class_is_drawn_in_its_schema_colour(tmp_path: Path) -> None:
    # a row without validation in the middle (None) must not break the drawing
    path = write_curves(
        _rows(6, gap=3), POTSDAM.classes, tmp_path / "c.png", colours=POTSDAM.colours
    )
    assert path == tmp_path / "c.png"
    rgb = _pixels(path)
    right = rgb[:, rgb.shape[1] // 2 :]
    for name in ("building", "clutter", "tree"):
        colour = POTSDAM.colours[POTSDAM.index(name)]
        assert _count(right, colour) > 50, name
    # the left panel (losses) has no class colours
    assert _count(rgb[:, : rgb.shape[1] // 3], (0, 0, 255)) == 0
    # only the PNG is left: no temporary beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


def test_a_white_class_gets_a_dark_outline(tmp_path: Path) -> None:
    rows = _rows(5)
    outline = (64, 64, 64)  # the stroke's grey, "0.25"
    white = write_curves(rows, ["impervious_surfaces"], tmp_path / "w.png", colours=[(255,) * 3])
    blue = write_curves(rows, ["impervious_surfaces"], tmp_path / "b.png", colours=[(0, 0, 255)])
    n_white, n_blue = _count(_pixels(white), outline), _count(_pixels(blue), outline)
    assert n_white > 5 * max(n_blue, 10), (n_white, n_blue)


def test_rows_without_validation_draw_the_losses_only(tmp_path: Path) -> None:
    path = write_curves(
        _rows(4, val=False), POTSDAM.classes, tmp_path / "c.png", colours=POTSDAM.colours
    )
    rgb = _pixels(path)
    for colour in POTSDAM.colours:
        if colour != (255, 255, 255):
            assert _count(rgb, colour) == 0, colour
    # and one epoch alone, all-None values and CSV-style empty strings are drawable
    write_curves([{"epoch": "1", "train_loss": "0.5", "val_miou": ""}], ["a", "b"], path)
    _pixels(path)


def test_colours_must_match_the_classes(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="one colour per class"):
        write_curves(_rows(2), ["a", "b"], tmp_path / "c.png", colours=[(0, 0, 0)])
    assert not (tmp_path / "c.png").exists()


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of epochs in each curves write of train()."""
    calls: list[int] = []
    real: Callable[..., Path] = loop.write_curves

    def spy(rows: Sequence[Mapping[str, Any]], *args: Any, **kwargs: Any) -> Path:
        calls.append(len(rows))
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(loop, "write_curves", spy)
    return calls


@pytest.mark.usefixtures("one_thread")
def test_train_draws_the_curves_once_at_the_end(
    store: Path, tmp_path: Path, drawn: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "CURVES_EVERY_S", 1e9)
    out = tmp_path / "model.pt"
    rep = train(store, out, config=replace(TINY, epochs=2))
    assert rep.curves == curves_path_for(out) == tmp_path / "model.curves.png"
    assert drawn == [2]
    rgb = _pixels(rep.curves)
    assert _count(rgb, POTSDAM.colours[POTSDAM.index("building")]) > 0


def _stop_in_epoch(n: int) -> Callable[[TrainEvent], None]:
    def stop(e: TrainEvent) -> None:
        if e.epoch == n and e.kind == "step":
            raise InterruptError

    return stop


@pytest.mark.usefixtures("one_thread")
def test_curves_follow_interruptions_resume_and_overwrite(
    store: Path, tmp_path: Path, drawn: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = replace(TINY, epochs=2)
    out = tmp_path / "m.pt"
    curves = curves_path_for(out)
    # a long run (here: any run) redraws after an epoch: an interrupted one has a picture
    monkeypatch.setattr(loop, "CURVES_EVERY_S", 0.0)
    with pytest.raises(InterruptError):
        train(store, out, config=cfg, progress=_stop_in_epoch(2))
    assert drawn == [1] and curves.is_file()
    # resumed: redrawn from the saved history at once, then after each epoch (not twice)
    monkeypatch.setattr(loop, "CURVES_EVERY_S", 1e9)
    drawn.clear()
    train(store, out, config=cfg, resume=True)
    assert drawn == [1, 2]
    _pixels(curves)
    # a fresh run removes the old picture, like the old CSV
    drawn.clear()
    with pytest.raises(InterruptError):
        train(store, out, config=cfg, overwrite=True, progress=_stop_in_epoch(1))
    assert drawn == [] and not curves.exists()


def test_a_folder_in_the_place_of_the_curves_is_refused(store: Path, tmp_path: Path) -> None:
    (tmp_path / "m.curves.png").mkdir()
    with pytest.raises(OutputError, match="m.curves.png"):
        train(store, tmp_path / "m.pt", config=TINY)
    assert not (tmp_path / "m.pt").exists()


def test_without_matplotlib_training_runs_and_warns(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A minimal install (the GPU check carries no matplotlib) trains without the picture."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rep = train(store, tmp_path / "m.pt", config=replace(TINY, epochs=1))
    assert rep.checkpoint.exists() and not rep.curves.exists()
    assert "matplotlib is not installed" in caplog.text

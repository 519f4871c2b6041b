"""One run of the whole chain through the real CLI, on the CPU, on tiny synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli


def run(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_synth_tile_train_predict_vectorize_evaluate(tmp_path: Path) -> None:
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    run("synth", str(train_dir), "--scenes", "3", "--size", "1024", "--seed", "0")
    run("synth", str(test_dir), "--scenes", "1", "--size", "1024", "--seed", "1")
    run("tile", str(train_dir), "-o", str(tmp_path / "tiles"), "--size", "512", "--overlap", "0")
    model = tmp_path / "model.pt"
    run(
        "train",
        str(tmp_path / "tiles"),
        "--model",
        "unet",
        "--encoder",
        "resnet18",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--downsample",
        "4",
        "--val-scenes",
        "2_12",
        "--device",
        "cpu",
        "-o",
        str(model),
    )
    assert model.exists()
    run(
        "predict",
        str(test_dir),
        "-m",
        str(model),
        "-o",
        str(tmp_path / "maps"),
        "--device",
        "cpu",
        "--probabilities",
    )
    classes = tmp_path / "maps" / "2_10_classes.tif"
    image = test_dir / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif"
    with rasterio.open(classes) as c, rasterio.open(image) as i:
        assert (c.crs, c.transform, c.shape) == (i.crs, i.transform, i.shape)
        assert c.overviews(1) and c.colormap(1)[1][:3] == (0, 0, 255)
    gpkg = tmp_path / "vectors.gpkg"
    run(
        "vectorize",
        str(classes),
        "-o",
        str(gpkg),
        "--probabilities",
        str(tmp_path / "maps" / "2_10_probs.tif"),
        "--min-area",
        "2",
    )
    labels = test_dir / "5_Labels_all" / "top_potsdam_2_10_label.tif"
    run("evaluate", str(classes), str(labels), "--json", str(tmp_path / "pix.json"))
    pix = json.loads((tmp_path / "pix.json").read_text())
    # every labelled pixel was predicted (no nodata on a fully valid scene) and scored
    assert pix["pixel_count"] == 1024 * 1024
    assert 0.0 <= pix["miou"] <= 1.0
    run(
        "evaluate",
        "--vectors",
        str(gpkg),
        str(test_dir / "truth.gpkg"),
        "--json",
        str(tmp_path / "obj.json"),
    )
    obj = json.loads((tmp_path / "obj.json").read_text())
    assert obj["tp"] + obj["fn"] > 0


@pytest.mark.slow
def test_demo_pipeline_small(tmp_path: Path) -> None:
    from geoseg.demo import run_demo

    steps: list[str] = []
    rep = run_demo(tmp_path / "demo", size=1024, train_scenes=3, epochs=2, step=steps.append)
    assert len(steps) == 7
    for name in (
        "class map (COG)",
        "polygons (GeoPackage)",
        "metrics (JSON)",
        "model",
        "training curves (PNG)",
        "quick-look (PNG)",
    ):
        assert rep.outputs[name].exists(), name
    assert set(rep.seconds) == {
        "synth", "tile", "train", "predict", "vectorize", "evaluate", "quick-look"
    }  # fmt: skip
    png = rep.outputs["quick-look (PNG)"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "test mIoU" in rep.figures and "mIoU" in rep.table
    res = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path / "demo")])
    assert res.exit_code == 1 and "--overwrite" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_the_demo_gives_the_same_figures_on_every_run(tmp_path: Path) -> None:
    from geoseg.demo import run_demo

    a = run_demo(tmp_path / "a", size=1024, train_scenes=3, epochs=3)
    b = run_demo(tmp_path / "b", size=1024, train_scenes=3, epochs=3)
    assert a.figures == b.figures and a.table == b.table
    assert a.figures["test mIoU"] > 0

"""The outputs in a real QGIS: the class map's legend is exactly the schema, styles load.

PyQGIS lives in the system Python (Debian ``python3-qgis``), not in the project's
environment, so ``tests/qgis_probe.py`` runs there in a subprocess (offscreen) and reports
what QGIS shows as JSON. Skipped, with the reason, where that Python has no ``qgis``.

The picture in the README (``tests/golden/qgis_legend.png``) is what the probe renders here:
the test compares its rendering with it loosely (size, the class colours present).
``GEOSEG_UPDATE_GOLDEN=1 pytest tests/test_qgis.py`` writes it again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rasterio.windows import Window

from geoseg.grid import GeoBox
from geoseg.options import VectorizeOptions
from geoseg.raster.writers import write_classes, write_probabilities
from geoseg.schema import IGNORE, POTSDAM
from geoseg.synth import make_scene, scene_transform
from geoseg.vectorize import vectorize_raster

HERE = Path(__file__).parent
PROBE = HERE / "qgis_probe.py"
GOLDEN = HERE / "golden" / "qgis_legend.png"
QGIS_PYTHON = os.environ.get("GEOSEG_QGIS_PYTHON", "/usr/bin/python3")
PNG_SIZE = (740, 480)  # the probe's map (480 px) and legend (260 px) side by side
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": ""}


def _qgis_missing() -> str | None:
    """Why PyQGIS cannot run here, or None."""
    if shutil.which(QGIS_PYTHON) is None:
        return f"{QGIS_PYTHON} not found (set GEOSEG_QGIS_PYTHON to a Python with qgis)"
    try:
        done = subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"],
            env=ENV,
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{QGIS_PYTHON} -c 'import qgis.core' did not finish in 120 s"
    if done.returncode != 0:
        return (
            f"{QGIS_PYTHON} cannot import qgis (install PyQGIS: "
            "apt-get install -y python3-qgis, as README's Install says)"
        )
    return None


needs_qgis = pytest.mark.skipif(
    (why := _qgis_missing()) is not None, reason=why or "PyQGIS is available"
)
INSTALL = "apt-get update -qq && apt-get install -y -qq python3-qgis"
"""README's install line for PyQGIS, which CI runs in the same words."""


def test_ci_installs_pyqgis_as_the_readme_says() -> None:
    root = HERE.parent
    assert INSTALL in (root / "README.md").read_text(encoding="utf-8")
    assert INSTALL in (root / ".ci" / "run").read_text(encoding="utf-8")


def probe(classes: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [QGIS_PYTHON, str(PROBE), str(classes), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A class map (a synthetic scene's truth), its probabilities and its vectors."""
    root = tmp_path_factory.mktemp("qgis")
    scene = make_scene(size=1000, seed=0, transform=scene_transform(0, 1000))
    labels = scene.labels
    h, w = labels.shape
    grid = GeoBox(w, h, scene.transform, scene.crs)
    whole = Window(0, 0, w, h)
    classes = write_classes(root / "s_classes.tif", [(whole, labels)], geobox=grid, schema=POTSDAM)
    onehot = np.stack([(labels == i) * np.uint8(255) for i in range(len(POTSDAM))])
    probs = write_probabilities(
        root / "s_probs.tif", [(whole, onehot, labels != IGNORE)], geobox=grid, schema=POTSDAM
    )
    gpkg = root / "s.gpkg"
    vectorize_raster(classes, gpkg, options=VectorizeOptions(min_area=2.0, simplify=0.1))
    return {"classes": classes, "probs": probs, "gpkg": gpkg, "root": root}


def schema_palette() -> list[list[Any]]:
    return [
        [float(i), name, [*rgb, 255]]
        for i, (name, rgb) in enumerate(zip(POTSDAM.classes, POTSDAM.colours, strict=True))
    ]


@needs_qgis
def test_qgis_legend_holds_exactly_the_schema_classes(outputs: dict[str, Path]) -> None:
    png = outputs["root"] / "qgis.png"
    got = probe(
        outputs["classes"],
        "--probabilities",
        str(outputs["probs"]),
        "--gpkg",
        str(outputs["gpkg"]),
        "--png",
        str(png),
    )
    raster = got["classes"]
    assert raster["valid"] and raster["crs"] == "EPSG:32633"
    assert raster["renderer"] == "paletted"
    assert raster["classes"] == schema_palette()
    # the legend: six entries, names and colours, not 256 slots
    assert raster["legend"] == [[name, rgba] for _, name, rgba in schema_palette()]

    probs = got["probabilities"]
    assert probs["valid"] and probs["renderer"] == "singlebandpseudocolor"
    assert [label for label, _ in probs["legend"]] == ["0.00", "0.25", "0.50", "0.75", "1.00"]

    # vectorize's styles, stored in the GeoPackage, load with the layers
    vectors = got["vectors"]
    assert set(vectors) == {"buildings", "roads"}
    for layer, cls in (("buildings", "building"), ("roads", "impervious_surfaces")):
        v = vectors[layer]
        assert v["valid"] and v["crs"] == "EPSG:32633" and v["features"] > 0
        assert v["styles_in_database"] == [layer]
        assert v["colour"][:3] == list(POTSDAM.colours[POTSDAM.index(cls)])

    check_picture(png)
    if os.environ.get("GEOSEG_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, GOLDEN)
    if GOLDEN.is_file():
        check_picture(GOLDEN)


def check_picture(png: Path) -> None:
    """The rendering's size, and every class colour on the map part."""
    with Image.open(png) as im:
        assert im.size == PNG_SIZE
        pixels = np.asarray(im.convert("RGB"))[:, : PNG_SIZE[1]].reshape(-1, 3)
    present = {tuple(int(v) for v in p) for p in np.unique(pixels, axis=0)}
    for name, rgb in zip(POTSDAM.classes, POTSDAM.colours, strict=True):
        assert rgb in present, f"{png}: no pixel of {name} {rgb}"


@needs_qgis
def test_without_the_style_qgis_lists_256_entries(outputs: dict[str, Path]) -> None:
    """The control: the colour table alone gives the 256-slot legend the style replaces."""
    bare = outputs["root"] / "bare"
    bare.mkdir()
    for name in ("s_classes.tif", "s_classes.tif.aux.xml"):
        shutil.copyfile(outputs["root"] / name, bare / name)
    raster = probe(bare / "s_classes.tif")["classes"]
    assert raster["renderer"] == "paletted"
    assert len(raster["legend"]) == 256
    assert raster["legend"][:6] == [[name, rgba] for _, name, rgba in schema_palette()]

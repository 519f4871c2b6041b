from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning

from geoseg.cli.main import COMMANDS, cli
from geoseg.schema import IGNORE, POTSDAM

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
ATLANTA = REAL / "solaris_spacenet4_atlanta"
needs_real = pytest.mark.skipif(
    not ATLANTA.is_dir(),
    reason=f"shared real data not found at {ATLANTA} (only present in the project workspace)",
)
TF = Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0)


def _write(path, array, *, transform=TF, crs="EPSG:32633"):
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
    return str(path)


def run(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.output


def assert_one_line_error(code, out, *needles):
    assert code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:"), out
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


@pytest.fixture
def rasters(tmp_path):
    rng = np.random.default_rng(7)
    truth = np.kron(rng.integers(0, 6, (8, 10)), np.ones((8, 8), int)).astype(np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.25
    pred[flip] = rng.integers(0, 6, int(flip.sum()))
    pred[:2] = IGNORE
    return {
        "pred": _write(tmp_path / "pred.tif", pred),
        "truth": _write(tmp_path / "truth.tif", truth),
        "label": _write(tmp_path / "label.tif", POTSDAM.encode(truth), crs=None),
        "tmp": tmp_path,
    }


def test_registered_and_help():
    assert COMMANDS["evaluate"] == "geoseg.cli.evaluate:evaluate"
    code, out = run("evaluate", "--help")
    assert code == 0
    assert "--vectors" in out and "--min-miou" in out and "$ geoseg evaluate" in out


def test_prints_table(rasters):
    code, out = run("evaluate", rasters["pred"], rasters["label"], "--ignore-class", "clutter")
    assert code == 0, out
    for name in (*POTSDAM.classes[:5], "clutter*", "OA", "mIoU", "mean F1"):
        assert name in out


def test_json_written_and_never_clobbered(rasters):
    out_json = rasters["tmp"] / "m.json"
    code, out = run(
        "evaluate", rasters["pred"], rasters["truth"], "--eroded", "2", "--json", out_json
    )
    assert code == 0, out
    report = json.loads(out_json.read_text())
    assert report["mode"] == "pixels" and report["eroded"] == 2
    assert report["schema"] == "potsdam"
    assert [c["name"] for c in report["classes"]] == list(POTSDAM.classes)
    assert 0 < report["miou"] < 1
    assert f"{100 * report['miou']:5.2f}" in out  # the table shows the same number
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--json", out_json)
    assert_one_line_error(code, out, "already exists", "--overwrite")
    code, out = run(
        "evaluate", rasters["pred"], rasters["truth"], "--json", out_json, "--overwrite"
    )
    assert code == 0
    assert json.loads(out_json.read_text())["eroded"] == 0


def test_min_miou_judges(rasters):
    out_json = rasters["tmp"] / "m.json"
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--json", out_json)
    miou = json.loads(out_json.read_text())["miou"]
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--min-miou", miou + 0.01)
    assert_one_line_error(code, out, "mIoU", "below the required minimum")
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--min-miou", miou - 0.01)
    assert code == 0, out


def test_grid_mismatch_is_a_one_line_error(rasters):
    shifted = _write(
        rasters["tmp"] / "shifted.tif",
        np.zeros((64, 80), np.uint8),
        transform=TF @ Affine.translation(3, 0),
    )
    code, out = run("evaluate", rasters["pred"], shifted)
    assert_one_line_error(code, out, "pred.tif", "shifted.tif", "same grid")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ignore-class", "sky"], "'sky' is not a class"),
        (["--schema", "nope"], "no such schema"),
        (["--eroded", "-1"], "--eroded"),
        (["--min-miou", "2"], "--min-miou"),
        (["--vectors", "--eroded", "3"], "--eroded applies to raster mode"),
        (["--iou", "0.3"], "--iou applies to --vectors mode"),
    ],
)
def test_bad_options_exit_2(rasters, args, needle):
    code, out = run("evaluate", rasters["pred"], rasters["truth"], *args)
    assert code == 2, out
    assert needle in out


@needs_real
def test_vectors_atlanta_reference(tmp_path):
    out_json = tmp_path / "b.json"
    pred, gt = ATLANTA / "pred.geojson", ATLANTA / "gt.geojson"
    args = ("evaluate", "--vectors", pred, gt, "--confidence-column", "conf")
    code, out = run(*args, "--json", out_json)
    assert code == 0, out
    assert "F1" in out and "0.2857" in out
    report = json.loads(out_json.read_text())
    assert (report["tp"], report["fp"], report["fn"]) == (8, 20, 20)
    assert report["f1"] == 0.2857142857142857
    assert len(report["matches"]) == 8
    code, out = run(*args, "--min-f1", "0.3")
    assert_one_line_error(code, out, "building F1 0.2857", "0.3")


@needs_real
def test_vectors_missing_layer_lists_layers():
    code, out = run(
        "evaluate", "--vectors", ATLANTA / "pred.geojson", ATLANTA / "gt.geojson",
        "--truth-layer", "buildings",
    )  # fmt: skip
    assert_one_line_error(code, out, "no layer 'buildings'", "layers: gt", "--truth-layer")


# --------------------------------------------------------------------------- roads

VEGAS = REAL / "apls_spacenet3_vegas_img0"
UTM11 = "EPSG:32611"


def _lines_file(path, lines, *, crs=UTM11, layer=None, driver=None):
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"id": range(len(lines))}, geometry=list(lines), crs=crs)
    frame.to_file(path, layer=layer, driver=driver)
    return path


@pytest.fixture
def roads(tmp_path):
    """A 'T' of three 100 m roads near Las Vegas; the prediction lacks one."""
    import geopandas as gpd
    from shapely.affinity import translate
    from shapely.geometry import LineString, Polygon

    x0, y0 = 664_400.0, 4_011_900.0
    t = [
        translate(g, x0, y0)
        for g in (
            LineString([(0, 0), (100, 0)]),
            LineString([(100, 0), (200, 0)]),
            LineString([(100, 0), (100, 100)]),
        )
    ]
    truth = _lines_file(tmp_path / "truth.geojson", t)
    # A vectorize-like GeoPackage: a polygon layer and the centre-lines.
    pred = tmp_path / "pred.gpkg"
    gpd.GeoDataFrame(geometry=[Polygon([(x0, y0), (x0 + 9, y0), (x0, y0 + 9)])], crs=UTM11).to_file(
        pred, layer="roads"
    )
    _lines_file(pred, t[::2], layer="road_centerlines")
    return {"truth": truth, "pred": pred, "lines": t, "tmp": tmp_path}


def test_roads_table_json_and_judge(roads):
    out_json = roads["tmp"] / "r.json"
    args = ("evaluate", "--roads", roads["pred"], roads["truth"], "--control-spacing", "1000")
    code, out = run(*args, "--json", out_json)
    assert code == 0, out
    assert "APLS" in out and "0.6667" in out and "truth -> pred" in out
    report = json.loads(out_json.read_text())
    assert report["mode"] == "roads"
    assert report["apls"] == pytest.approx(2 / 3, abs=1e-12)  # derived in tests/evaluate
    assert report["apls_truth_to_pred"]["score"] == 0.5
    assert report["apls_pred_to_truth"]["score"] == 1.0
    assert report["precision"] == 1.0 and report["recall"] == pytest.approx(202 / 300)
    assert report["control_spacing_m"] == 1000.0 and report["buffer_m"] == 2.0
    code, out = run(*args, "--min-apls", "0.7")
    assert_one_line_error(code, out, "APLS 0.6667 is below the required minimum 0.7")
    code, out = run(*args, "--min-apls", "0.6")
    assert code == 0, out


def test_roads_in_geographic_crs_are_scored_in_metres(roads):
    import geopandas as gpd

    geo = roads["tmp"] / "truth_4326.geojson"
    gpd.read_file(roads["truth"]).to_crs("EPSG:4326").to_file(geo)
    out_json = roads["tmp"] / "r.json"
    # prediction in UTM, truth in degrees (reprojected), then both in degrees (to UTM)
    for pred in (roads["pred"], geo):
        code, out = run("evaluate", "--roads", pred, geo, "--json", out_json, "--overwrite")
        assert code == 0, out
        report = json.loads(out_json.read_text())
        assert report["truth_length_m"] == pytest.approx(300.0, abs=1e-3)
    assert report["apls"] == pytest.approx(1.0, abs=1e-9)


def test_roads_read_geoparquet(roads):
    import geopandas as gpd

    parquet = roads["tmp"] / "road_centerlines.parquet"
    gpd.read_file(roads["pred"], layer="road_centerlines").to_parquet(parquet)
    code, out = run("evaluate", "--roads", parquet, roads["truth"], "--control-spacing", "1000")
    assert code == 0, out
    assert "0.6667" in out.splitlines()[0]
    code, out = run("evaluate", "--roads", parquet, roads["truth"], "--layer", "roads")
    assert_one_line_error(code, out, "one layer ('road_centerlines')", "leave out --layer")


def test_roads_refuse_polygons_and_missing_layers(roads):
    code, out = run("evaluate", "--roads", roads["pred"], roads["truth"], "--layer", "roads")
    assert_one_line_error(code, out, "pred.gpkg", "'roads' holds Polygon", "--layer")
    code, out = run("evaluate", "--roads", roads["pred"], roads["truth"], "--layer", "nope")
    assert_one_line_error(code, out, "no layer 'nope'", "road_centerlines", "--layer")


def test_roads_empty_truth_is_undefined_and_fails_a_minimum(roads):
    empty = _lines_file(roads["tmp"] / "empty.gpkg", [])
    code, out = run("evaluate", "--roads", roads["pred"], empty)
    assert code == 0, out
    assert "APLS" in out and "-" in out.splitlines()[0]
    code, out = run("evaluate", "--roads", roads["pred"], empty, "--min-apls", "0.1")
    assert_one_line_error(code, out, "APLS undefined")
    code, out = run("evaluate", "--roads", empty, roads["truth"], "--min-apls", "0.1")
    assert_one_line_error(code, out, "APLS 0.0000 is below")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--roads", "--vectors"], "--vectors and --roads are different modes"),
        (["--roads", "--iou", "0.3"], "--iou applies to --vectors mode only"),
        (["--roads", "--eroded", "3"], "--eroded applies to raster mode"),
        (["--buffer", "3"], "--buffer applies to --roads mode only"),
        (["--vectors", "--snap", "3"], "--snap applies to --roads mode only"),
        (["--layer", "x"], "--layer applies to --roads mode or --vectors mode only"),
        (["--roads", "--control-spacing", "0.5"], "--control-spacing"),
        (["--roads", "--max-pairs", "0"], "--max-pairs"),
    ],
)
def test_roads_bad_options_exit_2(roads, args, needle):
    code, out = run("evaluate", roads["pred"], roads["truth"], *args)
    assert code == 2, out
    assert needle in out


def test_road_layer_is_the_one_vectorize_writes():
    from geoseg.evaluate._run import ROAD_LAYER
    from geoseg.vectorize._run import CENTERLINE_LAYER

    assert ROAD_LAYER == CENTERLINE_LAYER


def _vegas_class_raster(path):
    """The truth lines as the road class on a UTM 11N grid over the image (0.27 m).

    Each line is buffered to its width (3.5 m per lane, flat ends) and burnt as class 0
    (impervious_surfaces, the potsdam schema's road class) into low vegetation (2).
    """
    import geopandas as gpd
    from rasterio.features import rasterize
    from rasterio.warp import calculate_default_transform

    with rasterio.open(VEGAS / "RGB-PanSharpen_AOI_2_Vegas_img0.tif") as src:
        transform, width, height = calculate_default_transform(
            src.crs, UTM11, src.width, src.height, *src.bounds
        )
    truth = gpd.read_file(VEGAS / "AOI_2_Vegas_img0_roads_gt.geojson").to_crs(UTM11)
    shapes = [
        (line.buffer(1.75 * max(int(lanes), 1), cap_style="flat"), 0)
        for line, lanes in zip(truth.geometry, truth["lane_number"], strict=True)
    ]
    classes = rasterize(
        shapes, out_shape=(height, width), transform=transform, fill=2, dtype="uint8"
    )
    assert 0.1 < (classes == 0).mean() < 0.25
    return _write(path, classes, transform=transform, crs=UTM11)


@pytest.fixture(scope="module")
def vegas(tmp_path_factory):
    """geoseg's centre-lines of the rasterized Vegas truth, scored by `evaluate --roads`."""
    if not VEGAS.is_dir():
        pytest.skip(f"shared real data not found at {VEGAS}")
    tmp = tmp_path_factory.mktemp("vegas")
    classes = _vegas_class_raster(tmp / "classes.tif")
    gpkg = tmp / "vegas.gpkg"
    code, out = run("vectorize", classes, "-o", gpkg, "--classes", "road", "--centerlines")
    assert code == 0, out
    truth = VEGAS / "AOI_2_Vegas_img0_roads_gt.geojson"  # EPSG:4326: reprojected
    out_json = tmp / "roads.json"
    code, out = run("evaluate", "--roads", gpkg, truth, "--json", out_json)
    assert code == 0, out
    return {"pred": gpkg, "truth": truth, "report": json.loads(out_json.read_text())}


def test_vegas_centrelines_score_high(vegas):
    report = vegas["report"]
    # Recorded: APLS 0.9254 (truth->pred 0.8773, pred->truth 0.9790), P 0.9993, R 0.9890.
    assert report["apls"] > 0.85
    assert report["precision"] > 0.95 and report["recall"] > 0.95
    assert report["truth_length_m"] == pytest.approx(4461.2, abs=1.0)
    assert not report["apls_truth_to_pred"]["sampled"]


def test_vegas_apls_equals_the_reference(vegas):
    import pyogrio

    from geoseg.evaluate.roads import road_graph
    from tests.evaluate import apls_reference

    ref = apls_reference.load()
    # The same graphs through CosmiQ's implementation: the centre-lines as written, the
    # truth in the prediction's CRS (what evaluate does).
    pred = pyogrio.read_dataframe(vegas["pred"], layer="road_centerlines")
    truth = pyogrio.read_dataframe(vegas["truth"]).to_crs(pred.crs)
    total, t2p, p2t = apls_reference.reference_apls(
        ref, road_graph(pred.geometry), road_graph(truth.geometry)
    )
    report = vegas["report"]
    assert report["apls_truth_to_pred"]["score"] == pytest.approx(t2p, abs=1e-9)
    assert report["apls_pred_to_truth"]["score"] == pytest.approx(p2t, abs=1e-9)
    assert report["apls"] == pytest.approx(total, abs=1e-9)

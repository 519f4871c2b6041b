"""Hostile output paths: every command checks every output before any work.

An output under a regular file, a file where a folder is to be written (or the reverse), an
existing output without ``--overwrite``, an unwritable folder, a name too long: each is
refused with ONE line naming the path, exit 1 (2 where click's own path check catches it
first), no traceback and an unchanged tree. Paths with spaces and non-ASCII characters work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from geoseg._io import atomic_path, check_output, check_output_path
from geoseg.errors import OutputError, OutputExistsError
from tests.conftest import write_raster
from tests.hostile.helpers import fails_cleanly, run, snapshot, tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny checkpoint (SegNet of width 4, 3 bands, 6 classes, 32 px tiles)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt")


class Case:
    """Tiny inputs of every command, a regular file ``f.txt`` and the commands' arguments."""

    def __init__(self, root: Path, ckpt: Path, store: Path) -> None:
        self.root = root
        rng = np.random.default_rng(0)
        self.scene = write_raster(
            root / "scene.tif", rng.integers(1, 256, (3, 40, 50)).astype(np.uint8)
        )
        self.classes = write_raster(
            root / "classes.tif", rng.integers(0, 6, (40, 50)).astype(np.uint8), nodata=255
        )
        self.file = root / "f.txt"
        self.file.write_text("a regular file\n")
        self.ckpt = ckpt
        self.store = store

    def args(self, command: str, out: Path | str) -> list[object]:
        """The arguments of ``command`` writing its (main) output to ``out``."""
        return {
            "tile": ["tile", self.scene, "--size", 32, "-o", out],
            "train": ["train", self.store, "--model", "segnet", "--epochs", 1, "-o", out],
            "predict": ["predict", self.scene, "-m", self.ckpt, "--device", "cpu", "-o", out],
            "vectorize": ["vectorize", self.classes, "-o", out],
            "parquet": ["vectorize", self.classes, "--format", "parquet", "-o", out],
            "evaluate": ["evaluate", self.classes, self.classes, "--json", out],
            "synth": ["synth", out, "--scenes", 1, "--size", 64],
            "demo": ["demo", "-o", out],
        }[command]


@pytest.fixture
def case(
    tmp_path: Path, ckpt: Path, train_store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Case]:
    monkeypatch.chdir(tmp_path)
    yield Case(tmp_path, ckpt, train_store)


# name of the output under the regular file f.txt, per command
UNDER_A_FILE = {
    "tile": "f.txt/tiles",
    "train": "f.txt/model.pt",
    "predict": "f.txt/maps",
    "vectorize": "f.txt/city.gpkg",
    "parquet": "f.txt/city",
    "evaluate": "f.txt/metrics.json",
    "synth": "f.txt/synth",
    "demo": "f.txt/demo",
}


@pytest.mark.parametrize("command", sorted(UNDER_A_FILE))
def test_an_output_under_a_regular_file_is_refused(case: Case, command: str) -> None:
    """Regression (issue 11, class 1): a raw NotADirectoryError/FileExistsError traceback."""
    out = UNDER_A_FILE[command]
    f = fails_cleanly(*case.args(command, out), watch=case.root, code=1, names=(out, "f.txt"))
    assert "is a file" in f.message and "choose another output path" in f.message


def test_an_output_deep_under_a_regular_file_is_refused(case: Case) -> None:
    fails_cleanly(
        *case.args("tile", "f.txt/a/b/c"), watch=case.root, code=1, names="f.txt is a file"
    )


def test_train_refuses_a_folder_in_the_place_of_its_metrics_csv(case: Case) -> None:
    (case.root / "model.metrics.csv").mkdir()
    f = fails_cleanly(
        *case.args("train", "model.pt"), watch=case.root, code=1, names="model.metrics.csv"
    )
    assert "is a folder" in f.message


@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_refuses_a_folder_in_the_place_of_its_class_map(
    case: Case, overwrite: bool
) -> None:
    (case.root / "maps" / "scene_classes.tif").mkdir(parents=True)
    extra = ["--overwrite"] if overwrite else []
    f = fails_cleanly(
        *case.args("predict", "maps"), *extra, watch=case.root, code=1, names="scene_classes.tif"
    )
    assert "is a folder" in f.message


def test_predict_refuses_a_file_in_the_place_of_its_work_folder(case: Case) -> None:
    (case.root / "maps").mkdir()
    (case.root / "maps" / ".scene.partial").write_text("not a folder")
    fails_cleanly(*case.args("predict", "maps"), watch=case.root, code=1, names=".scene.partial")


def test_vectorize_refuses_a_folder_where_the_geopackage_goes(case: Case) -> None:
    (case.root / "city.gpkg").mkdir()
    f = fails_cleanly(
        *case.args("vectorize", "city.gpkg"),
        "--overwrite",
        watch=case.root,
        code=1,
        names="city.gpkg",
    )
    assert "is a folder" in f.message


def test_vectorize_parquet_refuses_a_file_where_the_folder_goes(case: Case) -> None:
    f = fails_cleanly(
        *case.args("parquet", "f.txt"), "--overwrite", watch=case.root, code=1, names="f.txt"
    )
    assert "is a file" in f.message


@pytest.mark.parametrize("command", ["tile", "synth", "demo"])
def test_a_file_where_a_folder_goes_is_a_usage_error(case: Case, command: str) -> None:
    fails_cleanly(
        *case.args(command, "f.txt"), "--overwrite", watch=case.root, code=2, names="f.txt"
    )


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_folder_where_a_file_goes_is_a_usage_error(case: Case, command: str) -> None:
    (case.root / "out").mkdir()
    fails_cleanly(*case.args(command, "out"), "--overwrite", watch=case.root, code=2, names="out")


@pytest.mark.parametrize(
    ("func", "kind"),
    [("tile", "dir"), ("synth", "dir"), ("demo", "dir"), ("report", "file")],
)
def test_library_entry_points_refuse_the_other_kind(case: Case, func: str, kind: str) -> None:
    """The library checks too (click's path types only guard the command line)."""
    from geoseg.demo import run_demo
    from geoseg.evaluate import write_report
    from geoseg.raster import SceneSpec
    from geoseg.synth import synthesize
    from geoseg.tiles import TileOptions, tile_scenes

    target = case.file if kind == "dir" else case.root
    before = snapshot(case.root)
    with pytest.raises(OutputError, match="--overwrite never replaces"):
        if func == "tile":
            spec = SceneSpec("scene", case.scene)
            tile_scenes([spec], target, options=TileOptions(size=32), overwrite=True)
        elif func == "synth":
            synthesize(target, scenes=1, size=64, seed=0, overwrite=True)
        elif func == "demo":
            run_demo(target, overwrite=True)
        else:
            write_report({"a": 1}, target, overwrite=True)
    assert snapshot(case.root) == before


EXISTING = {
    "tile": "tiles",
    "train": "model.pt",
    "predict": "maps/scene_classes.tif",
    "vectorize": "city.gpkg",
    "evaluate": "metrics.json",
    "synth": "synth",
    "demo": "demo",
}


@pytest.mark.parametrize("command", sorted(EXISTING))
def test_an_existing_output_needs_overwrite(case: Case, command: str) -> None:
    existing = case.root / EXISTING[command]
    if command in ("tile", "synth", "demo"):
        existing.mkdir()
        (existing / "keep.txt").write_text("mine")
    else:
        existing.parent.mkdir(exist_ok=True)
        existing.write_text("mine")
    out = "maps" if command == "predict" else EXISTING[command]
    f = fails_cleanly(*case.args(command, out), watch=case.root, code=1, names=(EXISTING[command],))
    assert "--overwrite" in f.message


def test_an_unwritable_folder_is_refused(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.access

    def no_write_in_locked(path: object, mode: int, **kw: object) -> bool:
        return False if Path(str(path)).name == "locked" else real(path, mode, **kw)  # type: ignore[arg-type]

    (case.root / "locked").mkdir()
    monkeypatch.setattr("geoseg._io.os.access", no_write_in_locked)
    f = fails_cleanly(*case.args("tile", "locked/tiles"), watch=case.root, code=1, names="locked")
    assert "not writable" in f.message
    f = fails_cleanly(*case.args("predict", "locked/maps"), watch=case.root, code=1, names="locked")
    assert "not writable" in f.message


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused(case: Case) -> None:
    locked = case.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        fails_cleanly(*case.args("vectorize", "locked/c.gpkg"), watch=case.root, code=1)
    finally:
        locked.chmod(0o755)


def test_an_output_under_a_broken_link_is_refused(case: Case) -> None:
    links = case.root / "links"  # watched apart: snapshot() cannot hash a broken link
    links.mkdir()
    (links / "gone").symlink_to(case.root / "nowhere")
    fails_cleanly(
        *case.args("vectorize", "links/gone/city.gpkg"),
        watch=case.scene,
        code=1,
        names="broken link",
    )
    assert [p.name for p in links.iterdir()] == ["gone"] and not (case.root / "nowhere").exists()


def test_a_name_too_long_is_refused(case: Case) -> None:
    name = "x" * 250 + ".gpkg"
    fails_cleanly(*case.args("vectorize", name), watch=case.root, code=1, names="too long")


def test_spaces_and_unicode_in_output_paths_work(case: Case) -> None:
    """tile, predict, vectorize and evaluate into ``out dir é/``."""
    out = case.root / "out dir é"
    rc, output, exc = run(*case.args("tile", out / "tiles"))
    assert (rc, exc) == (0, None), output
    assert (out / "tiles" / "index.gpkg").is_file() and (out / "tiles" / "tiles.json").is_file()
    rc, output, exc = run(*case.args("predict", out))
    assert (rc, exc) == (0, None), output
    classes = out / "scene_classes.tif"
    assert classes.is_file() and (out / "scene.json").is_file()
    rc, output, exc = run("vectorize", classes, "-o", out / "städte ü.gpkg")
    assert (rc, exc) == (0, None), output
    assert (out / "städte ü.gpkg").is_file()
    rc, output, exc = run("evaluate", classes, classes, "--json", out / "m é" / "metrics.json")
    assert (rc, exc) == (0, None), output
    assert json.loads((out / "m é" / "metrics.json").read_text())["mode"] == "pixels"
    assert not [p for p in case.root.rglob("*") if "partial" in p.name]


# -- the library checks themselves ---------------------------------------------------------


def test_check_output_path_messages(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match=r"f\.txt/a/b: cannot create it: .*f\.txt is a file"):
        check_output_path(f / "a" / "b")
    with pytest.raises(OutputError, match="is a file, but a folder"):
        check_output_path(f, kind="dir")
    with pytest.raises(OutputError, match="is a folder, but a file"):
        check_output_path(tmp_path, kind="file")
    assert check_output_path(tmp_path / "new" / "deeper", kind="dir") == tmp_path / "new/deeper"
    assert check_output_path(f, kind="file") == f  # exists: that is check_output's business
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output(f, overwrite=False, kind="file")
    assert not (tmp_path / "new").exists()


def test_atomic_path_removes_the_folders_it_made_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a" / "b" / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_job_output_under_a_regular_file_is_refused(case: Case) -> None:
    job = case.root / "job.yaml"
    job.write_text(
        f"version: 1\nname: t\ninputs:\n  - image: {case.scene}\nmodel: {case.ckpt}\n"
        "output: f.txt/run\nsteps:\n  predict: {device: cpu}\n"
    )
    fails_cleanly("run", job, watch=case.root, code=1, names=("f.txt/run", "is a file"))


def test_a_bench_cache_under_a_regular_file_is_refused(case: Case) -> None:
    fails_cleanly(
        "bench",
        "vectorize",
        "--size",
        64,
        "--cache",
        "f.txt/cache",
        watch=case.root,
        code=2,
        names=("f.txt/cache", "is a file"),
    )

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import ConfigError
from geoseg.pipeline import (
    FilesInput,
    ImageInput,
    JobConfigError,
    PotsdamInput,
    load_job,
)
from tests.conftest import write_raster
from tests.pipeline.helpers import job_dict, make_data, shared_checkpoint, write_job

REPO = Path(__file__).resolve().parents[2]
TEST_SPLIT = "5_15 6_15 6_13 3_13 4_14 6_14 5_14 2_13 4_15 2_14 5_13 4_13 3_14 7_13".split()


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cfg")
    make_data(root / "data", scenes=2, size=64)
    return {"root": root, "data": root / "data", "model": shared_checkpoint(tmp_path_factory)}


def _problems(path: Path, **kw: bool) -> list[str]:
    with pytest.raises(JobConfigError) as info:
        load_job(path, **kw)
    assert isinstance(info.value, ConfigError)
    return list(info.value.problems)


def test_a_full_job_loads_with_paths_relative_to_the_job_file(
    tmp_path: Path, assets: dict[str, Path]
) -> None:
    data = assets["data"]
    (tmp_path / "imgs").mkdir()
    img = write_raster(tmp_path / "imgs" / "a.tif", np.ones((5, 32, 32), np.uint8))
    write_raster(tmp_path / "imgs" / "a_lab.tif", np.zeros((32, 32), np.uint8))
    b = write_raster(tmp_path / "imgs" / "b.tif", np.ones((5, 32, 32), np.uint8))
    shutil.copy(assets["model"], tmp_path / "m.pt")
    text = f"""
inputs:
  - potsdam: {data}
    ids: [2_10]                 # YAML 1.1 would read 210
    labels: noBoundary
  - glob: imgs/a.tif
    band_names: red,green,blue,nir,dsm
    labels: imgs/{{stem}}_lab.tif
  - image: imgs/b.tif
    id: bee
model: m.pt
output: out/run
workers: 3
steps:
  predict: {{tile-size: 64, overlap: 8, co: [COMPRESS=DEFLATE], probabilities: true}}
  vectorize: {{classes: building, probabilities: true, min_area: 2}}
"""
    job = load_job(write_job(tmp_path / "jobs" / ".." / "job.yaml", text))
    assert job.output == tmp_path / "out" / "run"
    assert job.model == tmp_path / "m.pt"
    assert job.workers == 3 and job.scheduler is None
    assert job.steps == ("predict", "landcover", "vectorize")
    assert job.predict.tile_size == 64 and job.predict.overlap == 8
    assert job.predict.creation_options == (("COMPRESS", "DEFLATE"),)
    assert job.vectorize is not None and job.vectorize.classes == ("building",)
    assert job.evaluate is None
    pots, files, image = job.inputs
    assert isinstance(pots, PotsdamInput) and pots.ids == ("2_10",)
    assert isinstance(files, FilesInput) and files.files == (img,)
    assert isinstance(image, ImageInput) and image.image == b
    ids = [s.id for s in job.scenes]
    assert ids == ["2_10", "a", "bee"]
    s_pots, s_a, s_b = job.scenes
    assert s_pots.labels is not None and "noBoundary" in s_pots.labels.name
    assert s_a.labels == tmp_path / "imgs" / "a_lab.tif"
    assert s_a.image_bands == ("red", "green", "blue", "nir", "dsm")
    assert s_b.labels is None


def test_three_mistakes_are_reported_together(tmp_path: Path, assets: dict[str, Path]) -> None:
    job = job_dict(assets["data"], tmp_path / "missing.pt", tmp_path / "out")
    job["steps"]["predict"]["tile_sise"] = 256
    job["steps"]["vectorize"]["min_area"] = "large"
    problems = _problems(write_job(tmp_path / "job.yaml", job))
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "steps.predict.tile_sise: unknown key; did you mean 'tile_size'?" in text
    assert "steps.vectorize.min_area: expected a number, got text 'large'" in text
    assert f"model: {tmp_path / 'missing.pt'} does not exist" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda j: j["steps"]["predict"].update(device="gpu"), "steps.predict.device: text 'gpu'"),
        (lambda j: j["steps"]["predict"].update(overlap=200), "steps.predict.overlap: 200 must"),
        (lambda j: j["steps"]["predict"].update(tile_size=8), "steps.predict.tile_size: 8 must"),
        (lambda j: j["steps"]["predict"].update(batch_size=True), "expected an integer"),
        (lambda j: j["steps"]["vectorize"].update(probabilities=True), "needs steps.predict"),
        (lambda j: j["steps"]["vectorize"].update(classes=["house"]), "house: not building"),
        (lambda j: j["steps"]["vectorize"].update(format="shp"), "steps.vectorize.format"),
        (lambda j: j["steps"]["evaluate"].update(ignore_class="cars"), "cars: not a class"),
        (lambda j: j["steps"]["evaluate"].update(min_miou=2), "between 0 and 1"),
        (lambda j: j["steps"].pop("predict"), "steps.predict: missing"),
        (lambda j: j["steps"].update(train={}), "steps.train: unknown key"),
        (lambda j: j.update(workers=0), "workers: 0 must be >= 1"),
        (lambda j: j.update(scheduler="10.0.0.5:8786"), "use tcp://HOST:PORT"),
        (lambda j: j.update(schema="nope"), "schema: nope: no such schema"),
        (lambda j: j.pop("output"), "output: missing; this key is required"),
        (lambda j: j.update(inputs=[{"potsdam": "x", "glob": "*.tif"}]), "exactly one of"),
        (lambda j: j["inputs"][0].update(ids=["9_9"]), "no image for tile 9_9"),
        (lambda j: j["inputs"][0].update(ids=["a_b"]), "not Potsdam tile ids"),
        (lambda j: j["inputs"].append({"glob": "nothing/*.tif"}), "matches no file"),
        (lambda j: j["inputs"].append(dict(j["inputs"][0])), "also given by inputs[0]"),
        (lambda j: j["inputs"][0].update(labels="none"), "have no labels to evaluate"),
    ],
)
def test_each_kind_of_mistake_names_its_yaml_path(
    tmp_path: Path, assets: dict[str, Path], edit: object, expected: str
) -> None:
    job = job_dict(assets["data"], assets["model"], tmp_path / "out")
    edit(job)  # type: ignore[operator]
    problems = _problems(write_job(tmp_path / "job.yaml", job))
    assert any(expected in p for p in problems), problems


def test_duplicate_keys_and_broken_yaml(tmp_path: Path, assets: dict[str, Path]) -> None:
    text = (
        f"inputs: [{{potsdam: {assets['data']}}}]\nmodel: {assets['model']}\n"
        "output: out\noutput: out2\nsteps: {predict: {overlap: 8}}\n"
    )
    problems = _problems(write_job(tmp_path / "dup.yaml", text))
    assert problems == ["line 4: key 'output' is given twice; keep one"]
    problems = _problems(write_job(tmp_path / "bad.yaml", "inputs: [unclosed\n"))
    assert len(problems) == 1 and problems[0].startswith("not valid YAML")
    problems = _problems(write_job(tmp_path / "list.yaml", "- a\n- b\n"))
    assert problems == ["(top level): expected a mapping, got a list"]


def test_octal_looking_numbers_are_not_silently_converted(tmp_path: Path) -> None:
    text = "inputs: []\nmodel: m.pt\noutput: o\nworkers: 017\nsteps: {predict: {}}\n"
    problems = _problems(write_job(tmp_path / "j.yaml", text), check_files=False)
    assert "workers: expected an integer, got text '017'" in problems


def test_the_error_message_has_one_line_per_problem(tmp_path: Path) -> None:
    job = {"inputs": [], "model": "m.pt", "output": "o", "steps": {"predict": {"tta": 1}}}
    path = write_job(tmp_path / "j.yaml", job)
    with pytest.raises(JobConfigError) as info:
        load_job(path, check_files=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 2 problems; nothing was run"
    assert lines[1:] == [
        "  inputs: expected at least 1 entry, got an empty list",
        "  steps.predict.tta: int 1 is not one of none, flip, d4",
    ]


def test_shipped_jobs_validate(tmp_path: Path) -> None:
    for name in ("demo.yaml", "potsdam.yaml"):
        job = load_job(REPO / "pipelines" / name, check_files=False)
        assert job.scenes == ()
        assert job.steps == ("predict", "landcover", "vectorize", "evaluate")
    potsdam = load_job(REPO / "pipelines" / "potsdam.yaml", check_files=False)
    (inp,) = potsdam.inputs
    assert isinstance(inp, PotsdamInput) and inp.ids == tuple(TEST_SPLIT)
    assert potsdam.evaluate is not None
    assert potsdam.evaluate.eroded == 3 and potsdam.evaluate.ignore_class == ("clutter",)


def test_shipped_potsdam_job_resolves_the_test_split_in_the_real_layout(
    tmp_path: Path, assets: dict[str, Path]
) -> None:
    # The layout the job names, with empty files: file checks need names, not pixels.
    pipelines = tmp_path / "repo" / "pipelines"
    pipelines.mkdir(parents=True)
    shutil.copy(REPO / "pipelines" / "potsdam.yaml", pipelines)
    data = tmp_path / "repo" / "data" / "potsdam"
    for tid in TEST_SPLIT:
        r, c = (int(v) for v in tid.split("_"))
        for rel in (
            f"4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif",
            f"1_DSM/dsm_potsdam_{r:02d}_{c:02d}.tif",
            f"5_Labels_all/top_potsdam_{r}_{c}_label.tif",
        ):
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).touch()
    best = tmp_path / "repo" / "runs" / "potsdam" / "best.pt"
    best.parent.mkdir(parents=True)
    shutil.copy(assets["model"], best)
    job = load_job(pipelines / "potsdam.yaml")
    assert [s.id for s in job.scenes] == TEST_SPLIT
    assert all(s.labels is not None and s.labels.parent.name == "5_Labels_all" for s in job.scenes)
    assert job.output == tmp_path / "repo" / "maps" / "potsdam-test"


def test_shipped_demo_job_resolves_the_demo_data(tmp_path: Path, assets: dict[str, Path]) -> None:
    (tmp_path / "pipelines").mkdir()
    shutil.copy(REPO / "pipelines" / "demo.yaml", tmp_path / "pipelines")
    shutil.copytree(assets["data"], tmp_path / "geoseg-demo" / "data" / "test")
    shutil.copy(assets["model"], tmp_path / "geoseg-demo" / "model.pt")
    job = load_job(tmp_path / "pipelines" / "demo.yaml")
    assert [s.id for s in job.scenes] == ["2_10", "2_11"]
    assert job.output == tmp_path / "geoseg-demo" / "run"


def test_without_file_checks_only_structure_is_checked(tmp_path: Path) -> None:
    job = {
        "inputs": [{"glob": "nowhere/*.tif"}, {"files": ["x.tif"]}, {"image": "y.tif"}],
        "model": "nope.pt",
        "output": "out",
        "steps": {"predict": {"overlap": 64}, "evaluate": {}},
    }
    loaded = load_job(write_job(tmp_path / "j.yaml", job), check_files=False)
    assert loaded.scenes == () and len(loaded.inputs) == 3


def test_a_bad_value_does_not_hide_the_checks_across_steps(tmp_path: Path) -> None:
    job = {
        "inputs": [{"potsdam": "x"}],
        "model": "m.pt",
        "output": "o",
        "steps": {
            "predict": {"tta": "flipp", "tile-size": 256, "overlap": 300},
            "vectorize": {"probabilities": True, "format": "shp"},
        },
    }
    problems = _problems(write_job(tmp_path / "j.yaml", job), check_files=False)
    assert problems == [
        "steps.predict.tta: text 'flipp' is not one of none, flip, d4; did you mean 'flip'?",
        "steps.vectorize.format: text 'shp' is not one of gpkg, parquet",
        "steps.predict.overlap: 300 must be smaller than tile_size (256)",
        "steps.vectorize.probabilities: needs steps.predict.probabilities: true "
        "(the probability rasters)",
    ]

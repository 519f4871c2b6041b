"""The work folder: concurrent seams, stale state discarded, resume after SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.predict import output_paths, predict_scenes
from tests.predict.helpers import (
    REPO,
    opts,
    random_scene,
    read,
    square_scene,
    three_conv_model,
    threshold_model,
)


def test_many_blocks_of_several_scenes_in_parallel_match_one_block_runs(tmp_path: Path) -> None:
    # 4 block threads and the driver's persist threads complete the seams of 20 small
    # blocks per scene concurrently; each scene must equal its one-block prediction.
    specs = [random_scene(tmp_path, 180, 250, seed=s) for s in (5, 6)]
    model = three_conv_model()
    many = predict_scenes(
        specs,
        model,
        tmp_path / "many",
        options=opts(overlap=12, block_size=40, workers=4, probabilities=True),
    )
    for spec, rep in zip(specs, many, strict=True):
        assert rep.blocks >= 20
        (one,) = predict_scenes(
            [spec], model, tmp_path / "one", options=opts(overlap=12, block_size=100000)
        )
        assert np.array_equal(read(rep.classes), read(one.classes))
    assert not any(p.name.startswith(".") for p in (tmp_path / "many").iterdir())


def test_stale_work_folder_is_discarded_and_leftovers_of_a_crash_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = square_scene(tmp_path, 70, 60, slice(5, 20), slice(10, 30))
    out = tmp_path / "out"
    paths = output_paths(out, spec.id)
    predict_scenes([spec], threshold_model(), out, options=opts(probabilities=True))
    expected = read(paths["classes"])
    # A crash after the sidecar and probabilities were renamed, before the classes were:
    paths["classes"].unlink()
    paths["work"].mkdir()
    (paths["work"] / "state.json").write_text(json.dumps({"key": "other options"}))
    (paths["work"] / "b_0_0").mkdir()  # a block of another configuration: must not be used
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(), out, options=opts(probabilities=True))
    assert any("starting afresh" in r.getMessage() for r in caplog.records)
    assert rep.blocks_resumed == 0
    assert np.array_equal(read(paths["classes"]), expected)
    assert not paths["work"].exists()


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from geoseg.predict import PredictModel, PredictOptions, predict_scenes
    from geoseg.raster import SceneSpec
    from geoseg.schema import POTSDAM

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
        def forward(self, x):
            time.sleep(float(os.environ.get("SLOW", "0")))
            return self.conv(x)

    model = PredictModel(module=Slow(), bands=("red", "green", "blue"), mean=(128.0,) * 3,
                         std=(64.0,) * 3, schema=POTSDAM, tile_size=32, gsd=0.05, name="slow")
    spec = SceneSpec(id="scene", image=Path(sys.argv[1]))
    options = PredictOptions(tile_size=32, overlap=8, batch_size=4, block_size=48, device="cpu",
                             probabilities=True, workers=1)
    for out in sys.argv[2:]:
        predict_scenes([spec], model, out, options=options)
    """
)


def test_sigkill_then_resume_redoes_nothing_and_gives_the_same_raster(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 200, 210, seed=9)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLOW": "0.15"}
    killed = tmp_path / "killed"
    work = output_paths(killed, "scene")["work"]
    proc = subprocess.Popen([sys.executable, str(script), str(spec.image), str(killed)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("b_*"))) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not output_paths(killed, "scene")["classes"].exists()  # nothing final appeared
    done_before = len(list(work.glob("b_*")))
    fresh = tmp_path / "fresh"
    env["SLOW"] = "0"
    subprocess.run(
        [sys.executable, str(script), str(spec.image), str(killed), str(fresh)], env=env, check=True
    )
    side = json.loads(output_paths(killed, "scene")["sidecar"].read_text())
    assert side["blocks"]["resumed"] >= done_before >= 3
    assert side["tiles"]["computed"] < side["tiles"]["planned"]
    for name in ("classes", "probs"):
        a = read(output_paths(killed, "scene")[name])
        b = read(output_paths(fresh, "scene")[name])
        assert np.array_equal(a, b)
    assert not work.exists()


def _block_results(plan, num_classes: int, seed: int):
    """Random integer sums for every block's seams and pieces, as run_block returns them."""
    from geoseg.predict._block import BlockResult

    rng = np.random.default_rng(seed)

    def sums(r):
        s = rng.integers(0, 1000, (num_classes + 1, r.height, r.width), dtype=np.int32)
        s[-1] += 1
        return s

    out = {}
    for b in plan.blocks:
        brect = plan.block_rect(b)
        seams = [(r, sums(r), np.ones((r.height, r.width), dtype=bool)) for r in plan.seam_rects(b)]
        pieces = [
            (d, plan.piece_rect(b, d), sums(plan.piece_rect(b, d))) for d in plan.dependents(b)
        ]
        out[b] = BlockResult(
            scene_index=0, block=b,
            classes=np.zeros((brect.height, brect.width), dtype=np.uint8), probs=None,
            seams=seams, pieces=[p for p in pieces if not p[1].empty], tiles=1, skipped=0,
            read_s=0.0, wait_s=0.0, device_s=0.0, runtime=("cpu", "fp32", 1, 0.0), seconds=0.0,
        )  # fmt: skip
    return out


def test_a_seam_is_sealed_from_memory_when_its_contributors_are_done_else_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoseg.predict._resume as resume
    from geoseg.blocks import plan_blocks
    from geoseg.grid import GeoBox
    from geoseg.raster import SceneSpec
    from tests.conftest import POTSDAM_TF

    plan = plan_blocks((300, 300), tile_size=64, overlap=16, block_size=100)
    results = _block_results(plan, 3, seed=7)
    written: list[str] = []
    real_save = resume._save_arrays
    monkeypatch.setattr(
        resume, "_save_arrays", lambda p, **a: (written.append(p.name), real_save(p, **a))
    )
    finals = {}
    for name, blocks in (("a", plan.blocks), ("b", plan.blocks[::-1])):
        written.clear()
        work = tmp_path / name / ".s.partial"
        run = resume.SceneRun(
            0, SceneSpec("s", tmp_path / "img.tif"), geobox=GeoBox(300, 300, POTSDAM_TF, None),
            plan=plan, key="k", paths={"work": work}, probabilities=False, warnings=[],
        )  # fmt: skip
        run.open()
        for b in blocks:
            run.persist(results[b])
        assert run.complete
        own_seams_on_disk = [n for n in written if n.startswith("s_")]
        if name == "a":  # row-major: every seam's contributors are done before it
            assert own_seams_on_disk == []
        else:  # reversed: seams wait on disk for their contributors
            assert own_seams_on_disk
        finals[name] = [(w, c.copy()) for w, c, _ in run.blocks(probs=False)]
    for (wa, ca), (wb, cb) in zip(finals["a"], finals["b"], strict=True):
        assert wa == wb and np.array_equal(ca, cb)

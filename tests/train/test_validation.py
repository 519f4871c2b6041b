from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geoseg.checkpoint import load_checkpoint
from geoseg.tiles import read_store
from geoseg.train import evaluate_chips, train
from tests.train_helpers import TINY

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_evaluated_in_a_fresh_process_gives_the_recorded_metrics(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.pt"
    train(store, out, config=replace(TINY, epochs=1, downsample=2, chip_size=None))
    ckpt = load_checkpoint(out)
    assert ckpt.gsd == pytest.approx(0.1) and ckpt.tile_size == 32
    code = (
        "import json, sys, torch; torch.set_num_threads(1)\n"
        "from geoseg.train import evaluate_chips\n"
        "m = evaluate_chips(sys.argv[1], sys.argv[2], scenes=['s2'], batch_size=4, device='cpu')\n"
        "print(json.dumps({'miou': m.miou, 'oa': m.overall_accuracy, 'iou': m.iou.tolist()}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(out), str(store)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["miou"] == pytest.approx(ckpt.metrics["val_miou"], rel=1e-9)
    assert got["oa"] == pytest.approx(ckpt.metrics["val_oa"], rel=1e-9)
    iou = [v if v is not None else float("nan") for v in ckpt.metrics["val_iou"].values()]
    np.testing.assert_allclose(got["iou"], iou, rtol=1e-9)
    # scored at the labels' own resolution: all valid pixels of the validation chips
    m = evaluate_chips(ckpt, store, scenes=["s2"], device="cpu")
    _, index = read_store(store)
    val = index[index.scene == "s2"]
    assert m.pixel_count == int(sum(val[f"class_{c}"].sum() for c in range(6)))

"""The model runner: full batches, exact results, errors handed to every request; TTA, bf16."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.blend import Edges
from geoseg.predict import PredictModel, predict_scenes
from geoseg.schema import ClassSchema
from tests.predict.helpers import (
    RGB,
    opts,
    random_scene,
    read,
    square_scene,
    three_conv_model,
    threshold_model,
)


class Recording(nn.Module):
    """Per-pixel logits from the bands (exact in any batch), recording each batch's size."""

    def __init__(self, fail_on_call: int | None = None, gate: Any = None) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.fail_on_call = fail_on_call
        self.gate = gate  # the first call waits for it: requests queue up meanwhile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        if self.fail_on_call is not None and len(self.sizes) == self.fail_on_call:
            raise RuntimeError("boom in the model")
        return torch.cat([x[:, :1], -x[:, :1], x[:, 1:2] * 0.5], dim=1)


def recording_model(module: nn.Module) -> PredictModel:
    three = ClassSchema("three", ("a", "b", "c"), ((0, 0, 0), (9, 9, 9), (99, 99, 99)))
    return PredictModel(
        module=module, bands=RGB, mean=(0.0,) * 3, std=(1.0,) * 3, schema=three,
        tile_size=8, gsd=0.05, name="recording",
    )  # fmt: skip


EDGES = Edges(top=True, bottom=True, left=True, right=True)  # a tile alone: no taper


def area_of(values: np.ndarray) -> Any:
    """A raw area (3 float32 image bands, all valid) holding ``values`` (3, h, w)."""
    from geoseg.raster import RawBlock

    return RawBlock(
        image=values.astype(np.float32),
        elevation=np.zeros((0, *values.shape[1:]), np.float32),
        valid=np.ones(values.shape[1:], bool),
        bands=RGB,
        sources=(("image", 0), ("image", 1), ("image", 2)),
    )


def run_block_on(runner: Any, values: np.ndarray, *, probabilities: bool = True) -> Any:
    """One block of n side-by-side 8 x 8 tiles (no overlap) through the runner."""
    from geoseg.blocks import Rect

    n = values.shape[2] // 8
    rect = Rect(0, 0, 8, 8 * n)
    tiles = [Rect(0, 8 * i, 8, 8) for i in range(n)]
    keys = [(8, 8, "hann", 0, EDGES, 12) for _ in tiles]
    block = runner.open_block(rect)
    runner.submit_area(block, area_of(values), rect, tiles, keys).result(timeout=30)
    return runner.finish_block(
        block, core=rect, valid=np.ones((8, 8 * n), bool), probabilities=probabilities
    ).result(timeout=30)


def test_runner_serves_concurrent_blocks_in_full_batches_with_exact_results() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.blend import decode, quantize_probs
    from geoseg.predict._runner import Runner

    module = Recording()
    runner = Runner(
        recording_model(module), device="cpu", precision="fp32", batch_size=4, tta="none"
    )
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(3, 8, 8 * n)).astype(np.float32) for n in (1, 7, 3, 4, 2, 9)]
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda v: run_block_on(runner, v), blocks))
    finally:
        runner.close()
    assert set(module.sizes) == {4}, "every model call takes exactly one full batch"
    assert len(module.sizes) >= -(-sum(v.shape[2] // 8 for v in blocks) // 4)
    for values, got in zip(blocks, results, strict=True):
        x = torch.from_numpy(values)[None]
        logits = torch.cat([x[:, :1], -x[:, :1], x[:, 1:2] * 0.5], dim=1)
        q = quantize_probs(torch.softmax(logits, dim=1).numpy())[0].astype(np.int32)
        w = 1 << 12  # no overlap, no taper: every weight is the full weight
        sums = np.concatenate([q * w, np.full((1, *q.shape[1:]), w, np.int32)])
        want_classes, want_probs = decode(sums, np.ones(q.shape[1:], bool), probabilities=True)
        assert np.array_equal(got.classes, want_classes)
        assert np.array_equal(got.probs, want_probs)
        assert got.device == "cpu" and got.device_s > 0


@pytest.mark.parametrize(
    ("fail_on_call", "expected"),
    [
        # batch 2 = last tile of block 1 + first of block 2: both fail, block 3 is served
        (2, ["failed", "failed", "ok"]),
        # batch 3 (block 2 only) fails after block 1's last tile was blended
        (3, ["ok", "failed", "ok"]),
    ],
)
def test_runner_hands_a_model_error_to_every_block_in_the_batch(
    fail_on_call: int, expected: list[str]
) -> None:
    from geoseg.blocks import Rect
    from geoseg.predict._runner import Runner

    gate = threading.Event()
    runner = Runner(
        recording_model(Recording(fail_on_call=fail_on_call, gate=gate)),
        device="cpu",
        precision="fp32",
        batch_size=2,
        tta="none",
    )
    rect = Rect(0, 0, 8, 24)
    tiles = [Rect(0, 8 * i, 8, 8) for i in range(3)]
    keys = [(8, 8, "hann", 0, EDGES, 12)] * 3
    try:
        handles = [runner.open_block(rect) for _ in range(3)]
        futures = [
            runner.submit_area(h, area_of(np.full((3, 8, 24), i, np.float32)), rect, tiles, keys)
            for i, h in enumerate(handles)
        ]
        gate.set()
        outcomes = []
        for h, f in zip(handles, futures, strict=True):
            try:
                f.result(timeout=30)
                runner.finish_block(h, core=rect, valid=np.ones((8, 24), bool)).result(timeout=30)
                outcomes.append("ok")
            except RuntimeError as exc:
                assert "boom in the model" in str(exc)
                # the block's finish reports the same error instead of a partial result
                with pytest.raises(RuntimeError, match="boom in the model"):
                    runner.finish_block(h, core=rect, valid=np.ones((8, 24), bool)).result(30)
                outcomes.append("failed")
    finally:
        runner.close()
    assert outcomes == expected


def test_a_broken_runner_fails_waiting_and_later_blocks_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geoseg.blocks import Rect
    from geoseg.predict._runner import Runner

    def broken(self: object, *args: object) -> None:
        raise RuntimeError("runner bug")

    monkeypatch.setattr(Runner, "_run_batch", broken)  # a fault outside the model
    runner = Runner(
        recording_model(Recording()), device="cpu", precision="fp32", batch_size=2, tta="none"
    )
    rect = Rect(0, 0, 8, 8)
    keys = [(8, 8, "hann", 0, EDGES, 12)]
    try:
        block = runner.open_block(rect)
        first = runner.submit_area(block, area_of(np.zeros((3, 8, 8))), rect, [rect], keys)
        with pytest.raises(RuntimeError, match="runner bug"):
            first.result(timeout=30)
        later = runner.finish_block(block, core=rect, valid=np.ones((8, 8), bool))
        with pytest.raises(RuntimeError, match="runner bug"):
            later.result(timeout=30)
    finally:
        runner.close()


def test_a_busy_runner_is_not_evicted_and_a_closed_one_refuses_new_blocks() -> None:
    from geoseg.blocks import Rect
    from geoseg.predict._runner import Runner

    runner = Runner(
        recording_model(Recording()), device="cpu", precision="fp32", batch_size=2, tta="none"
    )
    block = runner.open_block(Rect(0, 0, 8, 8))
    assert not runner.close_if_idle()  # a block is open on it
    runner.discard_block(block)
    runner.discard_block(block)  # released once, however often
    assert runner.close_if_idle()
    assert runner.broken
    with pytest.raises(RuntimeError, match="closed"):
        runner.open_block(Rect(0, 0, 8, 8))


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_tta_undoes_its_transforms(tmp_path: Path, tta: str) -> None:
    spec = square_scene(tmp_path, 120, 100, slice(5, 30), slice(60, 95))
    (rep,) = predict_scenes([spec], threshold_model(), tmp_path / tta, options=opts(tta=tta))
    expected = np.zeros((120, 100), np.uint8)
    expected[5:30, 60:95] = 1
    assert np.array_equal(read(rep.classes)[0], expected)


def test_bf16_precision_on_the_cpu_predicts_like_fp32(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 120, 150, seed=4)
    model = three_conv_model()
    reps = {
        p: predict_scenes(
            [spec], model, tmp_path / p, options=opts(precision=p, probabilities=True)
        )[0]
        for p in ("fp32", "bf16")
    }
    side = json.loads(reps["bf16"].sidecar.read_text())
    assert side["options"]["precision"] == "bf16"
    probs = {p: read(r.probabilities).astype(np.int32) for p, r in reps.items()}  # type: ignore[arg-type]
    diff = np.abs(probs["bf16"] - probs["fp32"])
    assert 0 < diff.max() <= 8, "bf16 really ran, and stays within 3 % of fp32"
    agree = read(reps["bf16"].classes) == read(reps["fp32"].classes)
    assert agree.mean() > 0.95

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


def test_runner_serves_concurrent_requests_in_full_batches_with_exact_results() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.blend import quantize_probs
    from geoseg.predict._runner import Runner

    module = Recording()
    runner = Runner(
        recording_model(module), device="cpu", precision="fp32", batch_size=4, tta="none"
    )
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(n, 3, 8, 8)).astype(np.float32) for n in (1, 7, 3, 4, 2, 9)]
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda t: runner.submit(t).result(timeout=30), requests))
    finally:
        runner.close()
    assert set(module.sizes) == {4}, "every model call takes exactly one full batch"
    assert len(module.sizes) >= -(-sum(len(r) for r in requests) // 4)
    for tiles, got in zip(requests, results, strict=True):
        x = torch.from_numpy(tiles)
        logits = torch.cat([x[:, :1], -x[:, :1], x[:, 1:2] * 0.5], dim=1)
        want = quantize_probs(torch.softmax(logits, dim=1).numpy())
        assert got.dtype == np.uint16 and got.shape == (len(tiles), 3, 8, 8)
        assert np.abs(got.astype(np.int32) - want).max() <= 1


@pytest.mark.parametrize(
    ("fail_on_call", "expected"),
    [
        # batch 2 = last tile of request 1 + first of request 2: both fail, 3 is served
        (2, ["failed", "failed", "ok"]),
        # batch 3 (request 2 only) fails while batch 2 (request 1's last tile) is in flight
        (3, ["ok", "failed", "ok"]),
    ],
)
def test_runner_hands_a_model_error_to_every_waiting_request(
    fail_on_call: int, expected: list[str]
) -> None:
    from geoseg.predict._runner import Runner

    gate = threading.Event()
    runner = Runner(
        recording_model(Recording(fail_on_call=fail_on_call, gate=gate)),
        device="cpu",
        precision="fp32",
        batch_size=2,
        tta="none",
    )
    try:
        # Distinct arrays: requests are found by identity, never by comparing their tiles.
        futures = [runner.submit(np.full((3, 3, 8, 8), i, np.float32)) for i in range(3)]
        gate.set()
        outcomes = []
        for f in futures:
            try:
                f.result(timeout=30)
                outcomes.append("ok")
            except RuntimeError as exc:
                assert "boom in the model" in str(exc)
                outcomes.append("failed")
    finally:
        runner.close()
    assert outcomes == expected


def test_a_broken_runner_fails_waiting_and_later_requests_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geoseg.predict._runner import Runner

    def broken(self: object, *args: object) -> None:
        raise RuntimeError("runner bug")

    monkeypatch.setattr(Runner, "_deliver", broken)  # a fault outside the model
    runner = Runner(
        recording_model(Recording()), device="cpu", precision="fp32", batch_size=2, tta="none"
    )
    try:
        first = runner.submit(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(RuntimeError, match="runner bug"):
            first.result(timeout=30)
        later = runner.submit(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(RuntimeError, match="runner bug"):
            later.result(timeout=30)
    finally:
        runner.close()


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

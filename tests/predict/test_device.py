"""The device-side per-pixel work equals the host arithmetic it replaced, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.blend import (
    PROB_SCALE,
    Accumulator,
    decode,
    quantize_probs,
    quantize_weights,
    weight_window,
)
from geoseg.blocks import Rect
from geoseg.predict._device import Transfers, compile_module, model_probs, normalise, quantize
from geoseg.schema import IGNORE

# -- the host implementation of geoseg 0.1 (before issue 12), kept here as the reference ---


def old_add(sums: npt.NDArray[np.int32], rect: Rect, probs_q, weights_q, tile: Rect) -> None:
    part = tile.intersect(rect)
    if part.empty:
        return
    src, dst = part.slices(tile), part.slices(rect)
    w = weights_q[src]
    target = sums[(slice(None), *dst)]
    target[:-1] += probs_q[(slice(None), *src)] * w
    target[-1] += w


def old_decode(sums, valid, probabilities):
    c = sums.shape[0] - 1
    wsum = sums[c].astype(np.int64)
    ok = valid & (wsum > 0)
    cls = np.argmax(sums[:c], axis=0).astype(np.uint8)
    cls[~ok] = IGNORE
    probs = None
    if probabilities:
        den = np.maximum(wsum, 1) * PROB_SCALE
        q = (sums[:c].astype(np.int64) * 510 + den) // (2 * den)
        probs = np.clip(q, 0, 255).astype(np.uint8)
        probs[:, ~ok] = 0
    return cls, probs


def old_normalise(data: npt.NDArray[np.float32], valid, mean, std) -> npt.NDArray[np.float32]:
    data = data.astype(np.float32).copy()
    data -= np.asarray(mean, dtype=np.float32)[:, None, None]
    data /= np.asarray(std, dtype=np.float32)[:, None, None]
    data[:, ~valid] = 0.0
    return data


# -- tests ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    classes=st.integers(2, 7),
    tiles=st.integers(1, 6),
    kind=st.sampled_from(["hann", "spline", "mean"]),
)
def test_accumulation_and_decode_equal_the_host_blending(
    seed: int, classes: int, tiles: int, kind: str
) -> None:
    rng = np.random.default_rng(seed)
    rect = Rect(3, 5, 40, 37)
    old = np.zeros((classes + 1, rect.height, rect.width), dtype=np.int32)
    acc = Accumulator(rect, classes)
    for _ in range(tiles):
        t = Rect(int(rng.integers(-8, 40)), int(rng.integers(-8, 40)), 16, 16)
        p = rng.dirichlet(np.ones(classes), size=(16, 16)).transpose(2, 0, 1)
        # ties on purpose: equal probabilities must go to the lower class everywhere
        p[:, :4] = 1.0 / classes
        q = quantize_probs(p)
        w = quantize_weights(weight_window((16, 16), kind=kind, overlap=6), 12)  # type: ignore[arg-type]
        old_add(old, rect, q, w, t)
        acc.add(torch.from_numpy(q.astype(np.int32)), torch.from_numpy(w), t)
    assert np.array_equal(acc.sums.numpy(), old)
    valid = rng.random((rect.height, rect.width)) > 0.1
    for probabilities in (False, True):
        want = old_decode(old, valid, probabilities)
        got = decode(acc.sums, torch.from_numpy(valid), probabilities=probabilities)
        assert np.array_equal(got[0].numpy(), want[0])
        if probabilities:
            assert np.array_equal(got[1].numpy(), want[1])
        else:
            assert got[1] is None
        # numpy in, numpy out: the driver's seams decode the same way
        got_np = decode(old, valid, probabilities=probabilities)
        assert np.array_equal(got_np[0], want[0])


def test_device_quantize_equals_host_quantize() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((3, 5, 64, 64)).astype(np.float32)
    p[0, 0, 0, :4] = [0.5 / 65535, 1.5 / 65535, 1.0, 0.0]  # halves round to even
    want = quantize_probs(p).astype(np.int32)
    got = quantize(torch.from_numpy(p.copy())).numpy()
    assert got.dtype == np.int32
    assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_device_normalisation_equals_host_normalisation(dtype: type) -> None:
    rng = np.random.default_rng(2)
    h, w = 33, 47
    image = (rng.random((3, h, w)) * 250).astype(dtype)
    elev = (rng.random((1, h, w)) * 30).astype(np.float32)
    valid = rng.random((h, w)) > 0.2
    sources = (("image", 2), ("elevation", 0), ("image", 0), ("image", 1))
    mean = (91.3, 3.7, 100.0, 120.1)
    std = (47.9, 5.3, 50.0, 61.7)
    host = np.stack(
        [image[2].astype(np.float32), elev[0], image[0].astype(np.float32), image[1]]
    ).astype(np.float32)
    want = old_normalise(host, valid, mean, std)
    for v in (torch.from_numpy(valid), None):
        got = normalise(
            torch.from_numpy(image),
            torch.from_numpy(elev),
            v,
            sources,
            torch.tensor(mean, dtype=torch.float32),
            torch.tensor(std, dtype=torch.float32),
        ).numpy()
        if v is None:
            want_all = old_normalise(host, np.ones((h, w), bool), mean, std)
            assert np.array_equal(got, want_all)
        else:
            assert np.array_equal(got, want)


def test_model_probs_rejects_a_model_that_changes_the_tile_size() -> None:
    from geoseg.errors import CheckpointError

    module = torch.nn.Conv2d(2, 3, kernel_size=3)  # no padding: 2 px smaller
    with pytest.raises(CheckpointError, match="keep the input size"):
        model_probs(module, torch.zeros(1, 2, 8, 8), tta="none", num_classes=3)


def test_tta_views_average_back_to_the_input_orientation() -> None:
    # a model that is not rotation invariant: every view must be undone exactly
    torch.manual_seed(0)
    module = torch.nn.Conv2d(2, 3, kernel_size=3, padding=1)
    x = torch.randn(2, 2, 16, 16)
    with torch.inference_mode():
        plain = model_probs(module, x, tta="none", num_classes=3)
        d4 = model_probs(module, x, tta="d4", num_classes=3)
    assert d4.shape == plain.shape
    assert torch.allclose(d4.sum(dim=1), torch.ones(2, 16, 16), atol=1e-5)


def test_cpu_transfers_share_memory_and_deliver_at_once() -> None:
    t = Transfers(torch.device("cpu"))
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (dev,) = t.to_device([a])
    assert dev.data_ptr() == torch.from_numpy(a).data_ptr() or np.array_equal(dev.numpy(), a)
    got: list[list[np.ndarray]] = []
    t.to_host([torch.arange(5)], got.append, pytest.fail)
    assert len(got) == 1 and got[0][0].tolist() == [0, 1, 2, 3, 4]
    t.close()


def test_compile_falls_back_to_the_eager_module_off_cuda() -> None:
    module = torch.nn.Conv2d(2, 3, kernel_size=1)
    said: list[str] = []
    out = compile_module(module, torch.device("cpu"), said.append)
    assert out is module
    assert said and "only used on CUDA" in said[0]


def test_the_ndsm_made_on_the_device_equals_the_host_ndsm(tmp_path: Path) -> None:
    from rasterio.windows import Window

    from geoseg.bench.scene import BENCH_BANDS, bench_scene

    spec = bench_scene(tmp_path, 300, dsm=True)
    mean = (100.0, 100.0, 100.0, 120.0, 3.0)
    std = (50.0, 50.0, 50.0, 50.0, 5.0)
    with spec.open() as scene:
        for win in (Window(0, 0, 300, 300), Window(-40, 170, 200, 190)):  # one reaches outside
            host = scene.read(win, bands=BENCH_BANDS)
            raw = scene.read_raw(win, bands=BENCH_BANDS, derive_ndsm=False)
            assert raw.ground is not None and raw.sources[-1][0] == "dsm-ground"
            assert np.array_equal(raw.valid, host.valid)
            g = raw.ground
            got = normalise(
                torch.from_numpy(raw.image),
                torch.from_numpy(raw.elevation),
                torch.from_numpy(raw.valid),
                raw.sources,
                torch.tensor(mean, dtype=torch.float32),
                torch.tensor(std, dtype=torch.float32),
                [torch.from_numpy(a) for a in (g.rows, g.c0, g.c1, g.tc)],
            ).numpy()
            want = old_normalise(host.data, host.valid, mean, std)
            assert np.array_equal(got, want)

"""The loop, validation and optimiser on a GPU, checked on the CPU.

The host reads the training loss at the log points only, validation reads its sums once,
the choice of the fused AdamW, and that none of this changes what a CPU run computes.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from geoseg.evaluate import confusion_matrix
from geoseg.losses import build_loss
from geoseg.train import adamw_fused, evaluate_epoch, train
from geoseg.train._loop import LOG_EVERY, is_log_step, make_scheduler, train_epoch
from geoseg.train._step import to_device, train_step
from geoseg.train._validation import confusion_counts
from tests.train.sync_probe import host_reads
from tests.train_helpers import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

C = 4
IGN = 255


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))


def batches(sizes: list[int], *, seed: int = 1, all_ignored: int | None = None) -> list[Any]:
    """(x, uint8 labels) batches of 8 x 8 px as a loader gives them, with ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(sizes):
        x = torch.randn(n, 3, 8, 8, generator=g)
        y = torch.randint(0, C, (n, 8, 8), generator=g, dtype=torch.uint8)
        y[torch.rand(n, 8, 8, generator=g) < 0.2] = IGN
        y[:, :, :2] = IGN
        if i == all_ignored:
            y[:] = IGN
        out.append((x, y))
    return out


def run_epoch(
    loader: list[Any], *, log_every: int, spec: str = "ce+dice"
) -> tuple[nn.Module, Any, list[tuple[int, float, float]]]:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = make_scheduler(opt, TINY, len(loader))
    events: list[tuple[int, float, float]] = []
    stats = train_epoch(
        model,
        loader,  # type: ignore[arg-type]
        loss_fn=build_loss(spec, num_classes=C, class_weights=[1.0, 2.0, 0.5, 1.0]),
        opt=opt,
        sched=sched,
        device=torch.device("cpu"),
        on_step=lambda *a: events.append(a),
        log_every=log_every,
    )
    return model, stats, events


# --- the probe itself -------------------------------------------------------------------------


def test_the_probe_sees_reads_by_geoseg_code_only() -> None:
    t = torch.tensor([1.0, 0.0])
    code = (
        "def reads(t):\n"
        "    _ = t.sum().item(), float(t[0]), bool(t.any()), t[t > 0], t.tolist()\n"
        "    return torch.nonzero(t)\n"
    )
    scope: dict[str, Any] = {"__name__": "geoseg.fake", "torch": torch}
    exec(compile(code, "<geoseg.fake>", "exec"), scope)
    with host_reads() as calls:
        scope["reads"](t)
        _ = t.sum().item(), bool(t.any()), t[t > 0]  # the test's own reads: not recorded
    assert calls == [
        "geoseg.fake: Tensor.item",
        "geoseg.fake: Tensor.__float__",
        "geoseg.fake: Tensor.__bool__",
        "geoseg.fake: boolean index",
        "geoseg.fake: Tensor.tolist",
        "geoseg.fake: torch.nonzero",
    ]
    assert float(t[0]) == 1.0 and torch.Tensor.__getitem__ is not None  # restored


# --- training loop ----------------------------------------------------------------------------


def test_log_points() -> None:
    assert [s for s in range(1, 26) if is_log_step(s, 25, 10)] == [1, 10, 20, 25]
    assert [s for s in range(1, 3) if is_log_step(s, 2, 10)] == [1, 2]
    assert all(is_log_step(s, 7, 1) for s in range(1, 8))
    assert LOG_EVERY > 1


@pytest.mark.parametrize("spec", ["ce+dice", "wce+lovasz+focal"])
def test_the_loop_reads_the_loss_once_per_log_interval(spec: str) -> None:
    loader = batches([2] * 24 + [1], all_ignored=5)
    with host_reads() as calls:
        _, stats, events = run_epoch(loader, log_every=10, spec=spec)
    # log points 1, 10, 20, 25: one read each, by the loop; none by the losses
    assert calls == ["geoseg.train._loop: Tensor.tolist"] * 4
    assert len(events) == 25 and stats.chips == 49


def test_the_log_cadence_changes_neither_training_nor_the_epoch_loss() -> None:
    loader = batches([3] * 12 + [2], all_ignored=4)
    every_step = run_epoch(loader, log_every=1)
    sparse = run_epoch(loader, log_every=5)
    for a, b in zip(every_step[0].parameters(), sparse[0].parameters(), strict=True):
        assert torch.equal(a, b)
    # every step read: the step's own loss, as before; the epoch's mean as the host summed it
    steps = [loss for _, loss, _ in every_step[2]]
    sizes = [int(x.shape[0]) for x, _ in loader]
    total = 0.0
    for loss, n in zip(steps, sizes, strict=True):
        total += loss * n
    assert every_step[1].loss == sparse[1].loss == total / sum(sizes)
    assert steps[4] == 0.0  # the batch whose pixels are all ignored
    # sparse: the chip-weighted mean since the previous log point, held until the next one
    expected = {1: [0], 5: [1, 2, 3, 4], 10: [5, 6, 7, 8, 9], 13: [10, 11, 12]}
    got = {step: loss for step, loss, _ in sparse[2]}
    for step, idx in expected.items():
        mean = sum(steps[i] * sizes[i] for i in idx) / sum(sizes[i] for i in idx)
        assert got[step] == pytest.approx(mean, rel=1e-12)
    assert got[7] == got[9] == got[5] and got[2] == got[1]
    assert [lr for *_, lr in sparse[2]] == [lr for *_, lr in every_step[2]]


# --- validation -------------------------------------------------------------------------------


def old_evaluate(model: nn.Module, loader: list[Any], loss_fn: nn.Module) -> tuple[Any, float]:
    """Validation as it was: the host reads every batch (the reference)."""
    cm = np.zeros((C, C), dtype=np.int64)
    loss_sum, weight = 0.0, 0
    with torch.no_grad():
        for x, y_host in loader:
            y = y_host.long()
            logits = model(x).float()
            n_valid = int((y != IGN).sum())
            if n_valid:
                loss_sum += float(loss_fn(logits, y)) * n_valid
                weight += n_valid
            pred = logits.argmax(dim=1).to(torch.uint8).numpy()
            cm += confusion_matrix(pred, y_host.numpy(), num_classes=C)
    return cm, loss_sum / weight if weight else float("nan")


@pytest.mark.parametrize("spec", ["ce+dice", "lovasz"])
def test_validation_equals_the_host_computation_and_reads_once(spec: str) -> None:
    model = tiny_model(3).eval()
    loss_fn = build_loss(spec, num_classes=C)
    reads = []
    for n in (1, 6):
        loader = batches([3] * n + [2], seed=n, all_ignored=1)
        with host_reads() as calls:
            res = evaluate_epoch(
                model,
                loader,  # type: ignore[arg-type]
                device=torch.device("cpu"),
                num_classes=C,
                loss_fn=loss_fn,
            )
        reads.append(calls)
        cm, loss = old_evaluate(model, loader, loss_fn)
        assert res.confusion.dtype == np.int64 and res.confusion.shape == (C, C)
        np.testing.assert_array_equal(res.confusion, cm)
        assert res.loss == loss  # the same float64 sums, in the same order
    assert reads[0] == reads[1] and len(reads[0]) <= 4  # at the end, whatever the batches


def test_validation_without_a_valid_pixel_or_a_loss() -> None:
    model = tiny_model().eval()
    loader = batches([2, 2], all_ignored=0)
    loader[1][1][:] = IGN
    res = evaluate_epoch(
        model,
        loader,  # type: ignore[arg-type]
        device=torch.device("cpu"),
        num_classes=C,
        loss_fn=build_loss("ce+dice", num_classes=C),
    )
    assert np.isnan(res.loss) and not res.confusion.any()
    res = evaluate_epoch(
        model,
        batches([2]),  # type: ignore[arg-type]
        device=torch.device("cpu"),
        num_classes=C,
        loss_fn=None,
    )
    assert np.isnan(res.loss) and res.confusion.sum() == int((batches([2])[0][1] != IGN).sum())


@pytest.mark.parametrize("seed", range(4))
def test_confusion_counts_equal_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 9))
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 20)), int(rng.integers(1, 20)))
    truth = rng.integers(0, num_classes + 2, shape).astype(np.uint8)  # some >= C
    truth[rng.random(shape) < 0.3] = IGN
    pred = rng.integers(0, num_classes, shape)
    pred[rng.random(shape) < 0.05] = num_classes  # out of range: not counted either
    expected = confusion_matrix(pred, truth, num_classes=num_classes)
    with host_reads() as calls:
        got = confusion_counts(
            torch.from_numpy(pred), torch.from_numpy(truth), num_classes=num_classes
        )
    assert calls == []
    assert got.dtype == torch.int64 and got.shape == (num_classes * num_classes,)
    np.testing.assert_array_equal(got.numpy().reshape(num_classes, num_classes), expected)
    signed = torch.from_numpy(truth).long()
    signed[0, 0, 0] = -1  # negative: not counted (numpy's rule for signed arrays)
    minus = expected.copy()
    t0, p0 = int(truth[0, 0, 0]), int(pred[0, 0, 0])
    if t0 < num_classes and p0 < num_classes:
        minus[t0, p0] -= 1
    got = confusion_counts(torch.from_numpy(pred), signed, num_classes=num_classes)
    np.testing.assert_array_equal(got.numpy().reshape(num_classes, num_classes), minus)


# --- the optimiser ----------------------------------------------------------------------------


def test_fused_adamw_on_cuda_only() -> None:
    assert adamw_fused(torch.device("cuda")) is True
    assert adamw_fused(torch.device("cuda", 1)) is True
    assert adamw_fused(torch.device("cpu")) is None
    assert adamw_fused(torch.device("meta")) is None
    # parameters that the fused kernel does not take: on the CPU, or not floating point
    assert adamw_fused(torch.device("cuda"), [torch.zeros(2)]) is None
    assert adamw_fused(torch.device("cuda"), [torch.zeros(2, device="meta")]) is None
    assert adamw_fused(torch.device("cpu"), [torch.zeros(2)]) is None


def adamw_steps(opt: torch.optim.Optimizer, model: nn.Module, steps: int, seed: int) -> None:
    x, y = batches([2], seed=seed)[0]
    loss_fn = build_loss("ce", num_classes=C)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y.long()).backward()
        opt.step()


@pytest.mark.parametrize(("first", "then"), [(None, True), (True, None)])
def test_adamw_state_moves_between_fused_and_default(first: bool | None, then: bool | None) -> None:
    """A resume state written by one implementation continues in the other (CPU-fused here)."""
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4, fused=first)
    adamw_steps(opt, model, 3, seed=1)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, map_location="cpu", weights_only=True)  # as load_resume does
    results = []
    for fused in (first, then):
        m = tiny_model(9)
        m.load_state_dict(state["model"])
        o = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-4, fused=fused)
        o.load_state_dict(copy.deepcopy(state["optimizer"]))
        adamw_steps(o, m, 2, seed=2)
        assert o.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
        assert all(float(s["step"]) == 5 for s in o.state_dict()["state"].values())
        results.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_train_chooses_the_optimiser_by_device(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoseg.train._loop as loop

    seen: list[tuple[torch.device, int]] = []

    def spy(device: torch.device, params: Any = ()) -> bool | None:
        params = list(params)
        seen.append((device, len(params)))
        return adamw_fused(device, params)

    monkeypatch.setattr(loop, "adamw_fused", spy)
    rep = train(store, tmp_path / "m.pt", config=replace(TINY, epochs=1))
    state = torch.load(rep.resume, weights_only=True)
    assert seen == [(torch.device("cpu"), len(state["optimizer"]["state"]))]
    assert state["optimizer"]["param_groups"][0]["fused"] is None


# --- on a GPU only (skipped here): torch's own sync detector ----------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_cuda(loader: list[Any]) -> list[Any]:
    return [(x.cuda(), y.cuda()) for x, y in loader]


@needs_cuda
@pytest.mark.parametrize("spec", ["ce+dice", "wce+lovasz+focal"])
def test_no_training_step_synchronises_on_cuda(spec: str) -> None:
    dev = torch.device("cuda")
    model = tiny_model().to(dev)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, fused=adamw_fused(dev, params))
    assert opt.defaults["fused"] is True
    loss_fn = build_loss(spec, num_classes=C, class_weights=[1.0, 2.0, 0.5, 1.0]).to(dev)
    loader = on_cuda(batches([2] * 4, all_ignored=2))
    x, y = to_device(*loader[0], dev)
    train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=dev)  # optimiser state, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x_batch, y_batch in loader:
            x, y = to_device(x_batch, y_batch, dev)
            train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=dev)
            with torch.no_grad():
                confusion_counts(model(x).argmax(dim=1), y, num_classes=C)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@needs_cuda
def test_loop_and_validation_synchronise_a_bounded_number_of_times_on_cuda() -> None:
    dev = torch.device("cuda")
    model = tiny_model().to(dev)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, fused=adamw_fused(dev, params))
    loss_fn = build_loss("ce+dice", num_classes=C).to(dev)
    loader = on_cuda(batches([2] * 12, all_ignored=3))
    x, y = to_device(*loader[0], dev)
    train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=dev)
    torch.cuda.synchronize()
    counts = []
    for run in ("train", "validate"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                if run == "train":  # log points: steps 1 and 12 only
                    train_epoch(
                        model,
                        loader,  # type: ignore[arg-type]
                        loss_fn=loss_fn,
                        opt=opt,
                        sched=make_scheduler(opt, TINY, len(loader)),
                        device=dev,
                        on_step=lambda *a: None,
                        log_every=100,
                    )
                else:
                    evaluate_epoch(
                        model,
                        loader,  # type: ignore[arg-type]
                        device=dev,
                        num_classes=C,
                        loss_fn=loss_fn,
                    )
            finally:
                torch.cuda.set_sync_debug_mode(0)
        counts.append(sum("synchroniz" in str(w.message) for w in seen))
    # train: one read at each of the 2 log points; validation: its sums once, at the end
    assert 1 <= counts[0] <= 4 and 1 <= counts[1] <= 4, counts


@pytest.mark.parametrize("fused", [True, None])
def test_a_resumed_optimizer_runs_the_implementation_chosen_now(fused: bool | None) -> None:
    from geoseg.train._step import use_implementation

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    params = list(net.parameters())
    saved = torch.optim.AdamW(params, lr=1e-2, fused=None if fused else True)
    net(torch.randn(5, 4)).sum().backward()
    saved.step()
    opt = torch.optim.AdamW(params, lr=1e-2, fused=fused)
    opt.load_state_dict(saved.state_dict())
    assert opt.param_groups[0]["fused"] == (None if fused else True)  # the saved choice...
    use_implementation(opt, fused)
    assert opt.param_groups[0]["fused"] == fused  # ...replaced by this run's
    net(torch.randn(5, 4)).sum().backward()
    opt.step()  # the chosen kernel accepts the loaded state
    assert all(torch.isfinite(p).all() for p in params)

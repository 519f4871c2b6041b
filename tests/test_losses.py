from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from geoseg.errors import InputError
from geoseg.losses import (
    LOSSES,
    BoundaryLoss,
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    DistancePenalisedCrossEntropyLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    build_loss,
    class_distances,
    class_weights_from_histogram,
)

IGN = 255


def logits_from_probs(probs: list[list[float]]) -> torch.Tensor:
    """(P, C) pixel probabilities -> logits (1, C, 1, P) whose softmax is exactly them."""
    return torch.log(torch.tensor(probs, dtype=torch.float64)).T[None, :, None, :]


def onehot_logits(labels: torch.Tensor, num_classes: int, scale: float = 60.0) -> torch.Tensor:
    return scale * F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(torch.float64)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = IGN
    target[1, :, 0] = IGN
    return logits, target


# --- cross-entropy --------------------------------------------------------------------------


def test_ce_of_uniform_logits_is_log_c(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, target = batch
    loss = build_loss("ce", num_classes=4)(torch.zeros(2, 4, 5, 6), target)
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)


def test_ce_matches_direct_formula(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    z = logits.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    t = target.reshape(-1).numpy()
    keep = t != IGN
    z, t = z[keep], t[keep]
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(t)), t]
    assert build_loss("ce", num_classes=4)(logits, target).item() == pytest.approx(nll.mean())


def test_wce_matches_direct_formula(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    w = [0.5, 2.0, 1.0, 0.0]
    z = logits.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    t = target.reshape(-1).numpy()
    keep = t != IGN
    z, t = z[keep], t[keep]
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(t)), t]
    wt = np.asarray(w)[t]
    expected = (wt * nll).sum() / wt.sum()
    loss = build_loss("wce", num_classes=4, class_weights=w)
    assert isinstance(loss, CrossEntropyLoss)
    assert loss(logits, target).item() == pytest.approx(expected)


# --- dice -----------------------------------------------------------------------------------


def test_dice_of_perfect_prediction_is_zero(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, target = batch
    logits = onehot_logits(torch.where(target == IGN, 0, target), 4)
    # ignored pixels predict class 0 wrongly-or-not: they must not matter
    assert build_loss("dice", num_classes=4)(logits, target).item() == pytest.approx(0, abs=1e-9)


def test_dice_known_value_over_present_classes() -> None:
    # 2 pixels, 3 classes; class 2 is absent from the targets and does not count.
    logits = logits_from_probs([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    target = torch.tensor([[[0, 1]]])
    dice0 = 2 * 0.7 / ((0.7 + 0.3) + 1)  # inter / (sum p_0 + sum y_0)
    dice1 = 2 * 0.6 / ((0.2 + 0.6) + 1)
    loss = DiceLoss(num_classes=3)(logits, target)
    assert loss.item() == pytest.approx(1 - (dice0 + dice1) / 2)


def test_dice_of_wrong_hard_prediction_is_one() -> None:
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = onehot_logits(1 - target, 2)
    assert DiceLoss(num_classes=2)(logits, target).item() == pytest.approx(1.0)


# --- focal ----------------------------------------------------------------------------------


def test_focal_with_gamma_zero_is_ce(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    focal = FocalLoss(num_classes=4, gamma=0.0)(logits, target)
    ce = CrossEntropyLoss(num_classes=4)(logits, target)
    assert focal.item() == pytest.approx(ce.item())


def test_focal_known_value() -> None:
    logits = logits_from_probs([[0.8, 0.2], [0.4, 0.6]])
    target = torch.tensor([[[0, 1]]])
    expected = (-(0.2**2) * math.log(0.8) - (0.4**2) * math.log(0.6)) / 2
    loss = build_loss("focal", num_classes=2)
    assert isinstance(loss, FocalLoss) and loss.gamma == 2.0
    assert loss(logits, target).item() == pytest.approx(expected)


# --- lovasz ---------------------------------------------------------------------------------


def lovasz_by_sets(probs: np.ndarray, labels: np.ndarray) -> float:
    """Lovasz extension of the Jaccard loss from its definition, with explicit sets.

    For class c with errors m_i = |y_i - p_i| sorted decreasingly (pi_1, pi_2, ...), the
    extension is sum_k m_pi_k (J({pi_1..pi_k}) - J({pi_1..pi_k-1})) with
    J(M) = 1 - |y \\ M| / |y u M|, M the set of mispredicted pixels.
    """
    losses = []
    for c in range(probs.shape[1]):
        fg = {i for i, y in enumerate(labels) if y == c}
        if not fg:
            continue
        err = np.abs((labels == c).astype(float) - probs[:, c])
        order = sorted(range(len(labels)), key=lambda i: -err[i])

        def jac(m: set[int], fg: set[int] = fg) -> float:
            return 1 - len(fg - m) / len(fg | m)

        total, prev, chosen = 0.0, 0.0, set()
        for i in order:
            chosen.add(i)
            j = jac(chosen)
            total += err[i] * (j - prev)
            prev = j
        losses.append(total)
    return float(np.mean(losses))


def test_lovasz_of_perfect_prediction_is_zero(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, target = batch
    logits = onehot_logits(torch.where(target == IGN, 0, target), 4)
    assert build_loss("lovasz", num_classes=4)(logits, target).item() == pytest.approx(0, abs=1e-9)


def test_lovasz_known_two_pixel_case() -> None:
    # p = [[0.8, 0.2], [0.4, 0.6]], labels [0, 1].
    # class 0: errors (0.2 on fg pixel 0, 0.4 on bg pixel 1); order (1, 0);
    #   J({1}) = 1 - 1/2 = 0.5, J({1, 0}) = 1 - 0/2 = 1 -> 0.4*0.5 + 0.2*0.5 = 0.3
    # class 1: errors (0.2 on bg pixel 0, 0.4 on fg pixel 1); order (1, 0);
    #   J({1}) = 1 - 0/1 = 1, J({1, 0}) = 1 -> 0.4*1 + 0.2*0 = 0.4
    # mean = 0.35
    logits = logits_from_probs([[0.8, 0.2], [0.4, 0.6]])
    target = torch.tensor([[[0, 1]]])
    assert LovaszSoftmaxLoss(num_classes=2)(logits, target).item() == pytest.approx(0.35)


def test_lovasz_matches_set_definition_on_random_case() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 3, 1, 9, generator=g, dtype=torch.float64)
    target = torch.tensor([[[0, 2, 2, 1, 0, 0, 2, 2, 0]]])
    probs = logits.softmax(1)[0, :, 0].T.numpy()
    expected = lovasz_by_sets(probs, target[0, 0].numpy())
    assert LovaszSoftmaxLoss(num_classes=3)(logits, target).item() == pytest.approx(expected)


def test_lovasz_of_hard_prediction_is_mean_jaccard_loss() -> None:
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    pred = torch.where(torch.rand(2, 4, 4, generator=g) < 0.3, (target + 1) % 3, target)
    t, p = target.numpy(), pred.numpy()
    ious = [((t == c) & (p == c)).sum() / ((t == c) | (p == c)).sum() for c in np.unique(t)]
    expected = 1 - float(np.mean(ious))
    loss = LovaszSoftmaxLoss(num_classes=3)(onehot_logits(pred, 3), target)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


# --- distance maps, boundary loss, distance-penalised CE -----------------------------------


def edt_reference(member: np.ndarray, max_distance: int) -> np.ndarray:
    """Distance to the nearest True pixel by brute force, clamped; the clamp where none."""
    ys, xs = np.nonzero(member)
    if len(ys) == 0:
        return np.full(member.shape, float(max_distance))
    gy, gx = np.indices(member.shape)
    d2 = (gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2
    return np.minimum(np.sqrt(d2.min(axis=-1)), max_distance)


@pytest.mark.parametrize("max_distance", [1, 2, 5, 30, 130])  # 130: int32 arithmetic
def test_class_distances_are_exact_up_to_the_clamp(max_distance: int) -> None:
    g = torch.Generator().manual_seed(max_distance)
    for h, w, density in [(1, 17, 0.1), (13, 1, 0.1), (19, 23, 0.02), (24, 20, 0.2), (9, 9, 0.0)]:
        member = torch.rand(2, 3, h, w, generator=g) < density
        member[0, 0, h // 2, w // 2] = True  # at least one map with a member
        got = class_distances(member, max_distance=max_distance)
        assert got.shape == member.shape and got.dtype == torch.float32
        for n, c in itertools.product(range(2), range(3)):
            expected = edt_reference(member[n, c].numpy(), max_distance)
            np.testing.assert_allclose(got[n, c].numpy(), expected, atol=1e-5)


def signed_distance_reference(target: np.ndarray, num_classes: int, clamp: int) -> np.ndarray:
    """The boundary loss's (C, H, W) maps, from brute-force distances (no ignored pixels).

    As the authors' ``one_hot2dist``: outside the class, the distance to it; inside, minus
    (the distance to the nearest other pixel - 1); distances clamped.
    """
    maps = []
    for c in range(num_classes):
        pos = target == c
        outside = edt_reference(pos, clamp)
        inside = edt_reference(~pos, clamp)
        maps.append(np.where(pos, 1.0 - inside, outside))
    return np.stack(maps)


def strip(labels: list[int]) -> torch.Tensor:
    return torch.tensor([[labels]])


def test_boundary_loss_on_a_strip_by_hand() -> None:
    # classes 0 | 1 meeting between pixels 2 and 3. Unnormalised signed distances:
    # phi_0 = [-2, -1, 0, 1, 2, 3], phi_1 = [3, 2, 1, 0, -1, -2]
    target = strip([0, 0, 0, 1, 1, 1])
    loss = BoundaryLoss(num_classes=2, normalise=False)
    perfect = loss(onehot_logits(target, 2), target)
    assert perfect.item() == pytest.approx(-6 / 6)  # -(2 + 1 + 0 + 0 + 1 + 2) / 6
    # a one-pixel shift of the border either way puts one pixel at signed distance +1
    for shifted in ([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]):
        value = loss(onehot_logits(strip(shifted), 2), target)
        assert value.item() == pytest.approx(-5 / 6)
    # a shift by two pixels: pixel 3 goes from 0 to +1, pixel 4 from -1 to +2
    assert loss(onehot_logits(strip([0, 0, 0, 0, 0, 1]), 2), target).item() == pytest.approx(-2 / 6)
    # uniform probabilities: the mean of (phi_0 + phi_1) / 2 = 1/2
    assert loss(torch.zeros(1, 2, 1, 6), target).item() == pytest.approx(0.5)
    # normalised: divided by the clamp
    normed = BoundaryLoss(num_classes=2, max_distance=4)(onehot_logits(target, 2), target)
    assert normed.item() == pytest.approx(-1 / 4)


def test_boundary_loss_clamps_distances() -> None:
    # 30 pixels of class 0 then 1 of class 1: the far pixels' distances stop at the clamp
    target = strip([0] * 30 + [1])
    wrong = onehot_logits(torch.ones_like(target), 2)  # everything predicted as class 1
    value = BoundaryLoss(num_classes=2, max_distance=20, normalise=False)(wrong, target)
    # class-0 pixels at distance 30 - i from class 1, clamped at 20; the class-1 pixel: 0
    expected = sum(min(30 - i, 20) for i in range(30)) / 31
    assert value.item() == pytest.approx(expected)


def test_boundary_loss_matches_a_numpy_reference() -> None:
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, 3, (2, 9, 11), generator=g)
    target[1] = torch.where(target[1] == 2, 0, target[1])  # class 2 absent from chip 1
    logits = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    probs = logits.softmax(1).numpy()
    clamp = 4
    expected = np.mean(
        [
            (probs[n] * signed_distance_reference(target[n].numpy(), 3, clamp)).sum(0)
            for n in range(2)
        ]
    )
    loss = BoundaryLoss(num_classes=3, max_distance=clamp, normalise=False)(logits, target)
    assert loss.item() == pytest.approx(expected)
    normed = BoundaryLoss(num_classes=3, max_distance=clamp)(logits, target)
    assert normed.item() == pytest.approx(expected / clamp)


def test_boundary_loss_is_minimal_for_the_perfect_prediction() -> None:
    g = torch.Generator().manual_seed(8)
    target = torch.randint(0, 3, (1, 8, 8), generator=g)
    target[0, :3] = IGN
    loss = build_loss("boundary", num_classes=3)
    assert isinstance(loss, BoundaryLoss)
    best = loss(onehot_logits(torch.where(target == IGN, 0, target), 3), target)
    for _ in range(20):
        other = loss(3 * torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64), target)
        assert other > best
    assert -1.0 <= best.item() < 1e-9  # random labels: nearly every pixel on a border


def test_boundary_loss_of_a_chip_with_one_class() -> None:
    # the other class is absent: clamp-far everywhere; inside, -(clamp - 1) / clamp
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    value = BoundaryLoss(num_classes=2, max_distance=10)(torch.zeros(1, 2, 3, 3), target)
    assert value.item() == pytest.approx((1.0 - 9 / 10) / 2)


def test_ignored_pixels_bound_no_region() -> None:
    # class 0 | ignored | class 1: the class-0 pixel is 2 px from class 1, not 1
    target = strip([0, IGN, 1])
    loss = BoundaryLoss(num_classes=2, normalise=False)
    # pixel 0: phi_0 = 1 - 2 = -1, pixel 2: phi_1 = -1; perfect prediction: mean -1
    assert loss(onehot_logits(strip([0, 0, 1]), 2), target).item() == pytest.approx(-1.0)
    dpce = DistancePenalisedCrossEntropyLoss(num_classes=2, w0=1.0, sigma=1.0)
    logits = logits_from_probs([[0.7, 0.3], [0.5, 0.5], [0.4, 0.6]])
    # both valid pixels are 2 - 0.5 px from the boundary: equal weights, so plain CE
    assert dpce(logits, target).item() == pytest.approx(-(math.log(0.7) + math.log(0.6)) / 2)


def dpce_reference(
    logits: torch.Tensor, target: torch.Tensor, w0: float, sigma: float, clamp: int = 20
) -> float:
    """The weighted CE from brute-force distances to the nearest pixel of another class."""
    num, den = 0.0, 0.0
    logp = torch.log_softmax(logits, 1).numpy()
    for n in range(target.shape[0]):
        t = target[n].numpy()
        d = np.full(t.shape, float(clamp))
        for c in range(logits.shape[1]):
            d = np.where(t == c, edt_reference((t != c) & (t != IGN), clamp), d)
        w = 1 + w0 * np.exp(-((d - 0.5) ** 2) / (2 * sigma**2))
        for y, x in zip(*np.nonzero(t != IGN), strict=True):
            num += w[y, x] * -logp[n, t[y, x], y, x]
            den += w[y, x]
    return num / den


def test_dpce_on_a_strip_by_hand() -> None:
    target = strip([0, 0, 0, 1, 1, 1])
    logits = logits_from_probs(
        [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6]]
    )
    # distances to the boundary 2.5, 1.5, 0.5, 0.5, 1.5, 2.5 px
    w = [1 + 10 * math.exp(-(d**2) / 50) for d in (2.5, 1.5, 0.5, 0.5, 1.5, 2.5)]
    p_true = [0.9, 0.8, 0.6, 0.2, 0.4, 0.6]
    expected = sum(wi * -math.log(p) for wi, p in zip(w, p_true, strict=True)) / sum(w)
    loss = build_loss("dpce", num_classes=2)
    assert isinstance(loss, DistancePenalisedCrossEntropyLoss)
    assert (loss.w0, loss.sigma, loss.max_distance) == (10.0, 5.0, 20)
    assert loss(logits, target).item() == pytest.approx(expected)
    # the boundary pixels weigh most: a mistake there costs more than one far from it
    ce = CrossEntropyLoss(num_classes=2)(logits, target)
    assert loss(logits, target) > ce  # the worst pixels (0.6, 0.2) sit at the boundary


def test_dpce_matches_a_numpy_reference(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    for w0, sigma in [(10.0, 5.0), (3.0, 1.0)]:
        loss = DistancePenalisedCrossEntropyLoss(num_classes=4, w0=w0, sigma=sigma)
        assert loss(logits, target).item() == pytest.approx(
            dpce_reference(logits, target, w0, sigma)
        )


def test_dpce_without_penalty_or_boundary_is_ce(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    ce = CrossEntropyLoss(num_classes=4)(logits, target)
    no_penalty = DistancePenalisedCrossEntropyLoss(num_classes=4, w0=0.0)(logits, target)
    torch.testing.assert_close(no_penalty, ce)
    # one class and ignored pixels only: no boundary, every weight the same
    single = torch.where(target == IGN, IGN, 2)
    torch.testing.assert_close(
        build_loss("dpce", num_classes=4)(logits, single),
        CrossEntropyLoss(num_classes=4)(logits, single),
    )


def test_dpce_with_class_weights(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    cw = [0.5, 2.0, 1.0, 0.0]
    loss = DistancePenalisedCrossEntropyLoss(num_classes=4, weight=cw)
    # reference: pixel weights times class weights, normalised by their sum
    logp = torch.log_softmax(logits, 1).numpy()
    num, den = 0.0, 0.0
    for n in range(2):
        t = target[n].numpy()
        d = np.full(t.shape, 20.0)
        for c in range(4):
            d = np.where(t == c, edt_reference((t != c) & (t != IGN), 20), d)
        w = (1 + 10 * np.exp(-((d - 0.5) ** 2) / 50)) * np.asarray(cw)[np.where(t == IGN, 0, t)]
        for y, x in zip(*np.nonzero(t != IGN), strict=True):
            num += w[y, x] * -logp[n, t[y, x], y, x]
            den += w[y, x]
    assert loss(logits, target).item() == pytest.approx(num / den)
    assert "weight" in dict(loss.named_buffers())


@pytest.mark.parametrize("spec", ["boundary", "dpce", "ce+boundary", "dpce+dice"])
def test_distance_losses_are_deterministic_with_finite_gradients(
    spec: str, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    logits, target = batch
    results = []
    for _ in range(2):
        z = logits.clone().float().requires_grad_(True)
        value = build_loss(spec, num_classes=4)(z, target)
        value.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        assert value.dtype == torch.float32 and torch.isfinite(value)
        results.append((value.detach(), z.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_new_terms_in_specs(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    ce = CrossEntropyLoss(num_classes=4)(logits, target)
    boundary = BoundaryLoss(num_classes=4)(logits, target)
    dpce = DistancePenalisedCrossEntropyLoss(num_classes=4)(logits, target)
    dice = DiceLoss(num_classes=4)(logits, target)
    summed = build_loss("ce+boundary", num_classes=4)
    assert isinstance(summed, CombinedLoss) and summed.names == ("ce", "boundary")
    torch.testing.assert_close(summed(logits, target), ce + boundary)
    for spec in ("ce+0.5*boundary", "CE + Boundary*0.5"):
        torch.testing.assert_close(
            build_loss(spec, num_classes=4)(logits, target), ce + 0.5 * boundary
        )
    torch.testing.assert_close(build_loss("dpce+dice", num_classes=4)(logits, target), dpce + dice)
    with pytest.raises(InputError, match="bad term 'boundry'") as exc:
        build_loss("ce+boundry", num_classes=4)
    assert "boundary" in str(exc.value) and "dpce" in str(exc.value)


def test_distance_loss_argument_errors() -> None:
    with pytest.raises(InputError, match="max_distance=0"):
        BoundaryLoss(num_classes=2, max_distance=0)
    with pytest.raises(InputError, match="max_distance=2.5"):
        DistancePenalisedCrossEntropyLoss(num_classes=2, max_distance=2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="sigma"):
        DistancePenalisedCrossEntropyLoss(num_classes=2, sigma=0.0)
    with pytest.raises(InputError, match="w0"):
        DistancePenalisedCrossEntropyLoss(num_classes=2, w0=-1.0)


# --- ignore index ---------------------------------------------------------------------------


SPECS = [*LOSSES, "ce+dice", "0.5*lovasz+focal", "ce+boundary", "dpce+dice"]


@pytest.mark.parametrize("spec", SPECS)
def test_ignored_pixels_change_neither_loss_nor_gradient(
    spec: str, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    logits, target = batch
    loss_fn = build_loss(spec, num_classes=4, class_weights=[1.0, 2.0, 0.5, 1.0])
    ignored = (target == IGN).unsqueeze(1).expand_as(logits)
    assert ignored.any() and not ignored.all()
    other = logits.clone()
    other[ignored] = torch.randn(int(ignored.sum()), dtype=other.dtype) * 50
    results = []
    for z in (logits, other):
        z = z.clone().requires_grad_(True)
        loss = loss_fn(z, target)
        loss.backward()
        assert z.grad is not None
        results.append((loss.detach(), z.grad))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(g1, g2)
    assert (g1[ignored] == 0).all()
    assert g1[~ignored].abs().sum() > 0


@pytest.mark.parametrize("spec", [*LOSSES, "ce+dice"])
def test_all_ignored_gives_zero_with_a_graph(spec: str) -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGN)
    loss = build_loss(spec, num_classes=3, class_weights=[1, 1, 1])(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_custom_ignore_index_and_uint8_targets(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    ref = build_loss("ce+lovasz", num_classes=4)(logits, target)
    remapped = torch.where(target == IGN, 9, target)
    alt = build_loss("ce+lovasz", num_classes=4, ignore_index=9)(logits, remapped)
    torch.testing.assert_close(ref, alt)
    as_uint8 = build_loss("ce+lovasz", num_classes=4)(logits, target.to(torch.uint8))
    torch.testing.assert_close(ref, as_uint8)


# --- spec parsing ---------------------------------------------------------------------------


def test_sums_and_weights(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    ce = CrossEntropyLoss(num_classes=4)(logits, target)
    dice = DiceLoss(num_classes=4)(logits, target)
    both = build_loss("ce+dice", num_classes=4)
    assert isinstance(both, CombinedLoss)
    assert both.names == ("ce", "dice") and both.weights == (1.0, 1.0)
    torch.testing.assert_close(both(logits, target), ce + dice)
    for spec in ("ce*0.5+dice", " CE * 0.5 + Dice ", "0.5*ce+dice"):
        torch.testing.assert_close(build_loss(spec, num_classes=4)(logits, target), 0.5 * ce + dice)
    torch.testing.assert_close(build_loss("2e-1*ce", num_classes=4)(logits, target), 0.2 * ce)


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("ce+dcie", "'dcie'"),
        ("ce+", "''"),
        ("bce", "'bce'"),
        ("ce*x", "'ce*x'"),
        ("2*ce*3", "'2*ce*3'"),
        ("ce-dice", "'ce-dice'"),
    ],
)
def test_bad_spec_names_the_term_and_lists_valid_ones(spec: str, bad: str) -> None:
    with pytest.raises(InputError, match="bad term") as exc:
        build_loss(spec, num_classes=4)
    msg = str(exc.value)
    assert bad in msg
    for name in LOSSES:
        assert name in msg


def test_spec_and_weight_errors() -> None:
    with pytest.raises(InputError, match="'wce' needs class weights"):
        build_loss("wce", num_classes=4)
    with pytest.raises(InputError, match="3 values for 4 classes"):
        build_loss("wce", num_classes=4, class_weights=[1, 1, 1])
    with pytest.raises(InputError, match="not all zero"):
        build_loss("wce", num_classes=2, class_weights=[0, 0])
    with pytest.raises(InputError, match="finite"):
        build_loss("wce", num_classes=2, class_weights=[1, -1])
    with pytest.raises(InputError, match="weight > 0"):
        build_loss("ce*0", num_classes=2)
    with pytest.raises(InputError, match="num_classes"):
        build_loss("ce", num_classes=0)


def test_shape_errors() -> None:
    loss = build_loss("ce", num_classes=4)
    with pytest.raises(InputError, match="built for 4"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(InputError, match="differ in batch or spatial size"):
        loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(InputError, match=r"expected logits \(N, C, H, W\)"):
        loss(torch.zeros(4, 2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_losses_move_with_the_module() -> None:
    loss = build_loss("wce", num_classes=2, class_weights=[1, 3])
    assert "weight" in dict(loss.named_buffers())
    half = loss.to(torch.float64)
    out = half(torch.zeros(1, 2, 1, 2, dtype=torch.float64), torch.tensor([[[0, 1]]]))
    assert out.dtype == torch.float64 and out.item() == pytest.approx(math.log(2))


# --- class weights --------------------------------------------------------------------------


def test_median_frequency_weights() -> None:
    # frequencies 0.1, 0.3, -, 0.6; median of the present ones is 0.3
    w = class_weights_from_histogram([10, 30, 0, 60])
    assert w == pytest.approx([3.0, 1.0, 0.0, 0.5])
    # an even number of present classes takes the mean of the two middle frequencies
    assert class_weights_from_histogram([10, 20, 30, 40]) == pytest.approx(
        [2.5, 1.25, 0.25 / 0.3, 0.25 / 0.4]
    )


def test_sqrt_median_frequency_weights_soften_the_ratio() -> None:
    # median 0.3: a class 3x rarer weighs sqrt(3), one 2x commoner 1/sqrt(2)
    w = class_weights_from_histogram([10, 30, 0, 60], method="sqrt_median_frequency")
    assert w == pytest.approx([math.sqrt(3.0), 1.0, 0.0, math.sqrt(0.5)])


def test_inverse_weights_average_to_one_per_pixel() -> None:
    hist = [10, 30, 0, 60]
    w = class_weights_from_histogram(hist, method="inverse")
    assert w == pytest.approx([100 / 30, 100 / 90, 0.0, 100 / 180])
    assert sum(wi * n for wi, n in zip(w, hist, strict=True)) / sum(hist) == pytest.approx(1.0)


@pytest.mark.parametrize("hist", [[0, 0, 0], [], [5, -1]])
def test_bad_histograms(hist: list[int]) -> None:
    with pytest.raises(InputError, match="class histogram"):
        class_weights_from_histogram(hist)


def test_bad_method() -> None:
    with pytest.raises(InputError, match="unknown method 'log'"):
        class_weights_from_histogram([1, 2], method="log")  # type: ignore[arg-type]


def test_every_term_trains_a_tiny_problem() -> None:
    """Each loss drives a per-pixel logit table towards the targets (sanity of gradients)."""
    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    target[0, 0, 0] = IGN
    for spec in itertools.chain(LOSSES, ["ce+dice"]):
        logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
        loss_fn = build_loss(spec, num_classes=3, class_weights=[1.0, 1.0, 1.0])
        opt = torch.optim.SGD([logits], lr=5.0)
        for _ in range(60):
            opt.zero_grad()
            loss_fn(logits, target).backward()
            opt.step()
        pred = logits.argmax(1)
        valid = target != IGN
        assert (pred[valid] == target[valid]).all(), spec


# --- no host synchronisation: the same values and gradients as the branching formulas -------


def _ref_prepare(
    target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    target = target.long()
    valid = target != ignore_index
    return target, valid, torch.where(valid, target, 0)


def ref_focal(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Focal loss as written before it was made sync-free (branch on the valid count)."""
    _, valid, safe = _ref_prepare(target, ignore_index)
    logpt = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    focal = -((1.0 - logpt.exp()).clamp_min(0.0) ** 2.0) * logpt
    n = valid.sum()
    if n == 0:
        return logits.sum() * 0.0
    return torch.where(valid, focal, 0.0).sum() / n


def ref_dice(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Dice as written before (branch on the present classes, boolean selection)."""
    _, valid, safe = _ref_prepare(target, ignore_index)
    v = valid.unsqueeze(1)
    probs = torch.where(v, logits.softmax(dim=1), 0.0)
    onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    onehot = torch.where(v, onehot, 0.0)
    dims = (0, 2, 3)
    count = onehot.sum(dims)
    present = count > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + count
    dice = 2.0 * inter / card.clamp_min(torch.finfo(probs.dtype).tiny)
    return 1.0 - dice[present].mean()


def _ref_lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def ref_lovasz(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Lovasz-softmax as written before (valid pixels selected, one sort per present class)."""
    _, valid, safe = _ref_prepare(target, ignore_index)
    probs = logits.softmax(dim=1).permute(0, 2, 3, 1)[valid]
    labels = safe[valid]
    losses = []
    for c in range(logits.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if not bool(fg.any()):
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _ref_lovasz_grad(fg[order])))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


REFERENCES = {"focal": ref_focal, "dice": ref_dice, "lovasz": ref_lovasz}


def reference_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    """(name, logits, target, ignore_index): random batches and the edge cases."""
    g = torch.Generator().manual_seed(11)
    cases = []
    for dtype in (torch.float64, torch.float32):
        for i in range(3):
            logits = 3 * torch.randn(2, 5, 7, 6, generator=g, dtype=dtype)
            target = torch.randint(0, 5, (2, 7, 6), generator=g)
            target[torch.rand(2, 7, 6, generator=g) < 0.3] = IGN
            cases.append((f"random{i}-{dtype}", logits, target, IGN))
        logits = 3 * torch.randn(2, 5, 7, 6, generator=g, dtype=dtype)
        absent = torch.randint(0, 2, (2, 7, 6), generator=g) * 3  # classes 0 and 3 only
        absent[0, 0] = IGN
        cases.append((f"absent-classes-{dtype}", logits, absent, IGN))
        cases.append((f"all-ignored-{dtype}", logits, torch.full((2, 7, 6), IGN), IGN))
        one = torch.full((2, 7, 6), IGN)
        one[1, 3, 2] = 4
        cases.append((f"one-valid-pixel-{dtype}", logits, one, IGN))
        nine = torch.where(absent == IGN, 9, absent)
        cases.append((f"ignore-index-9-{dtype}", logits, nine, 9))
        cases.append((f"uint8-{dtype}", logits, target.to(torch.uint8), IGN))
        full = torch.where(target == IGN, 1, target)
        cases.append((f"nothing-ignored-{dtype}", logits, full, IGN))
    return cases


CASES = reference_cases()


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sync_free_losses_equal_the_branching_formulas(
    name: str, case: tuple[str, torch.Tensor, torch.Tensor, int]
) -> None:
    _, logits, target, ignore_index = case
    loss_fn = build_loss(name, num_classes=5, ignore_index=ignore_index)
    results = []
    for fn in (loss_fn, lambda z, t: REFERENCES[name](z, t, ignore_index)):
        z = logits.clone().requires_grad_(True)
        value = fn(z, target)
        value.backward()
        assert z.grad is not None and torch.isfinite(z.grad).all()
        results.append((value.detach(), z.grad))
    (new, new_grad), (old, old_grad) = results
    assert new.shape == () and new.dtype == logits.dtype
    torch.testing.assert_close(new, old)
    torch.testing.assert_close(new_grad, old_grad)
    if not (target.long() != ignore_index).any():
        assert new.item() == 0.0 and (new_grad == 0).all()


@pytest.mark.parametrize("spec", [*LOSSES, "ce+dice", "0.5*lovasz+focal", "ce+0.5*boundary"])
def test_no_loss_reads_a_value_on_the_host(
    spec: str, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from tests.train.sync_probe import host_reads

    logits, target = batch
    loss_fn = build_loss(spec, num_classes=4, class_weights=[1.0, 2.0, 0.5, 1.0])
    for t in (target, torch.full_like(target, IGN)):
        z = logits.clone().requires_grad_(True)
        with host_reads() as calls:
            loss_fn(z, t).backward()
        assert calls == [], spec

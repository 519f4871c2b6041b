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
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszSoftmaxLoss,
    build_loss,
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


# --- ignore index ---------------------------------------------------------------------------


SPECS = ["ce", "wce", "dice", "focal", "lovasz", "ce+dice", "0.5*lovasz+focal"]


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


@pytest.mark.parametrize("spec", [*LOSSES, "ce+dice", "0.5*lovasz+focal"])
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

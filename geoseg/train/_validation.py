"""Scoring whole chips: the validation of each epoch and :func:`evaluate_chips`.

Both predict whole chips, upsample the logits to the labels' own resolution (a model trained
on chips read ``f`` times coarser is still scored against the store's labels) and accumulate
a confusion matrix over the valid (non-255) pixels, of the class channels only. A model with
a contact output (two-channel masks, see :mod:`geoseg.train._contact`) also counts the
contact target's true and false positives and false negatives (at p = 0.5).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from geoseg._torch import class_argmax, torch_device
from geoseg.checkpoint import Checkpoint, load_checkpoint
from geoseg.data import ChipDataset, SeededSampler, chip_gsd
from geoseg.errors import BandMismatchError, InputError, SchemaError
from geoseg.evaluate import PixelMetrics
from geoseg.schema import IGNORE
from geoseg.tiles import read_store
from geoseg.train._config import Device
from geoseg.train._contact import contact_counts
from geoseg.train._step import autocast, make_loader, to_device

__all__ = ["EvalResult", "confusion_counts", "evaluate_chips", "evaluate_epoch"]


@dataclass
class EvalResult:
    """A confusion matrix (true x predicted), the mean loss (NaN without one), contact counts.

    ``contact``: ``[tp, fp, fn]`` of a model with a contact output, else None.
    """

    confusion: np.ndarray
    loss: float
    contact: np.ndarray | None = None


def evaluate_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    num_classes: int,
    loss_fn: nn.Module | None,
    contact: bool = False,
) -> EvalResult:
    """Predict whole chips; upsample logits to the labels' size; accumulate a confusion matrix.

    The loss is the mean of the batch losses weighted by their valid (non-255) pixels,
    computed at the model's resolution (a model reading chips ``f`` times coarser is scored
    against the labels at the centres of its pixels, every ``f``-th from ``f // 2``). The
    confusion matrix and the loss sums stay on the device until the end: no batch waits for
    the host. With ``contact`` the masks are (N, 2, H, W) (classes, contact) and logit
    ``num_classes`` is the contact output.
    """
    model.eval()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    ct = torch.zeros(3, dtype=torch.int64, device=device)
    # loss x valid pixels (float64, as the host's sum was) and valid pixels
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    weight = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for x, y_host in loader:
            x, y = to_device(x, y_host, device)
            with autocast(device):
                logits = model(x)
            logits = logits.float()
            f = max(1, round(y.shape[-1] / x.shape[-1]))  # chips read f times coarser
            if loss_fn is not None:
                # the loss at the model's resolution: against the labels at the centres of
                # its pixels (f x cheaper in each direction than on the upsampled logits)
                y_loss = y[..., f // 2 :: f, f // 2 :: f] if f > 1 else y
                at_model = logits[..., : y_loss.shape[-2], : y_loss.shape[-1]]
                n_valid = ((y_loss[:, 0] if contact else y_loss) != IGNORE).sum()
                batch = loss_fn(at_model, y_loss).double() * n_valid
                loss_sum += torch.where(n_valid > 0, batch, 0.0)  # no loss without a pixel
                weight += n_valid
            if logits.shape[-2:] != y.shape[-2:]:
                # Chips read f times coarser (padded to a multiple of f): upsample by f and
                # crop. Block means put coarse pixel i's centre at fine (i + 0.5) f - 0.5,
                # which is what align_corners=False assumes.
                size = (x.shape[-2] * f, x.shape[-1] * f)
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                logits = logits[..., : y.shape[-2], : y.shape[-1]]
            classes = y[:, 0] if contact else y
            pred = class_argmax(logits[:, :num_classes])
            cm += confusion_counts(pred, classes, num_classes=num_classes)
            if contact:
                ct += contact_counts(logits[:, num_classes], y[:, 1])
    total, pixels = float(loss_sum.item()), int(weight.item())
    confusion = cm.reshape(num_classes, num_classes).cpu().numpy()
    counts = ct.cpu().numpy() if contact else None
    return EvalResult(confusion, total / pixels if pixels else math.nan, counts)


def confusion_counts(pred: torch.Tensor, truth: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """Counts of (truth, prediction) pairs on the tensors' device, without a host sync.

    As :func:`geoseg.evaluate.confusion_matrix`, flattened: pixels whose truth or prediction
    is not a class (255, negative, ``>= num_classes``) are not counted.

    Args:
        pred: Predicted classes, an integer tensor.
        truth: True classes, an integer tensor of the same shape.
        num_classes: Number of classes ``C``.

    Returns:
        An int64 tensor of ``C * C`` counts, index ``truth * C + pred``.
    """
    c = num_classes
    keep = (truth >= 0) & (truth < c) & (pred >= 0) & (pred < c)
    # excluded pixels go to an extra bin, dropped; scatter_add, unlike bincount, does not
    # read the largest value back to size its output
    code = torch.where(keep, truth.long() * c + pred.long(), c * c).reshape(-1)
    counts = torch.zeros(c * c + 1, dtype=torch.int64, device=code.device)
    counts.scatter_add_(0, code, torch.ones_like(code))
    return counts[: c * c]


def evaluate_chips(
    checkpoint: Checkpoint | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    scenes: Sequence[str] | None = None,
    batch_size: int = 8,
    device: Device = "auto",
    workers: int = 0,
) -> PixelMetrics:
    """Score a checkpoint on whole chips of a labelled store, as validation does in training.

    Chips are read at the checkpoint's ground sample distance (downsampled by
    ``checkpoint.gsd / store GSD``), normalised with the checkpoint's statistics, and the
    predicted logits are upsampled back to the chips' resolution and compared with their
    labels (255 ignored). Overlapping chips count their shared pixels more than once.

    Args:
        checkpoint: A :class:`~geoseg.checkpoint.Checkpoint` or its file.
        store: A labelled tile store with the checkpoint's bands and classes.
        scenes: Scenes to score (all of the store's if None).
        batch_size: Chips per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: DataLoader worker processes.

    Returns:
        The :class:`~geoseg.evaluate.PixelMetrics` over all scored pixels.

    Raises:
        InputError: Not a labelled store, unknown scenes.
        BandMismatchError: The store's bands differ from the checkpoint's.
        SchemaError: The store's classes differ from the checkpoint's.
        CheckpointError: An unreadable checkpoint.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    meta, index = read_store(store)
    if not meta.get("labels"):
        raise InputError(f"{store}: the tile store has no labels to score against")
    bands = tuple(meta["bands"])
    if bands != tuple(ckpt.bands):
        raise BandMismatchError(
            f"{store}: store bands {list(bands)} differ from the checkpoint's "
            f"{list(ckpt.bands)}; tile the scenes with --bands {','.join(ckpt.bands)}"
        )
    classes = tuple(c["name"] for c in meta["schema"]["classes"])
    if classes != ckpt.schema.classes:
        raise SchemaError(
            f"{store}: store classes {list(classes)} differ from the checkpoint's "
            f"{list(ckpt.schema.classes)}"
        )
    known = sorted(set(index["scene"]))
    wanted = known if scenes is None else list(scenes)
    missing = [s for s in wanted if s not in known]
    if missing:
        raise InputError(f"scene {missing[0]!r} is not in {store}; its scenes: {', '.join(known)}")
    rows = index[index["scene"].isin(wanted)].sort_values("path")
    paths = [Path(store) / p for p in rows["path"]]
    if not paths:
        raise InputError(f"{store}: no chips to score")
    ratio = ckpt.gsd / chip_gsd(paths[0])
    factor = max(1, round(ratio))
    if abs(ratio - factor) > 0.01 * factor:
        raise InputError(
            f"{store}: chips at {chip_gsd(paths[0])} m/px cannot be read at the checkpoint's "
            f"{ckpt.gsd} m/px by an integer factor; tile scenes at a compatible resolution"
        )
    dev = torch_device(device)
    ds = ChipDataset(
        paths,
        num_classes=ckpt.num_classes,
        mean=ckpt.mean,
        std=ckpt.std,
        downsample=factor,
        native_labels=True,
    )
    loader = make_loader(
        ds,
        SeededSampler(len(ds), seed=0, shuffle=False),
        batch_size=batch_size,
        workers=workers,
        cuda=dev.type == "cuda",
        seed=0,
    )
    model = ckpt.build_model().to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    result = evaluate_epoch(model, loader, device=dev, num_classes=ckpt.num_classes, loss_fn=None)
    return PixelMetrics.from_confusion(result.confusion, ckpt.schema.classes)

"""Datasets over a tile store: scene-wise splits, band statistics, chips as tensors.

A sampler decides *which* chips and *which* augmentation (:class:`SeededSampler` yields
``(index, sample_seed)`` keys); :class:`ChipDataset` decides *how* a chip becomes tensors
(read, downsample, crop, D4 transform, normalise). Because every random choice of a sample is
drawn from its own seed, a run is reproducible whatever the number of DataLoader workers and
whichever worker reads which chip, and a resumed run sees exactly the samples of an
uninterrupted one.

DataLoader workers receive chip *paths* and open the files themselves; nothing holding an
open file crosses a process boundary.

Augmentation is the dihedral group D4 (the 4 rotations by 90° and their mirror images),
done with exact index permutations (:func:`numpy.rot90`, :func:`numpy.flip` views, the same
elements as :func:`dihedral` on tensors) on the image and the mask together: no
interpolation, the mask keeps its integer classes and its 255s.

A store with a contact target (``geoseg tile --footprints``) gives, with ``contact=True``,
a two-channel mask ``(2, H, W)``: the classes, then the contact target (0/1, 255 = ignore),
cropped, downsampled and transformed together, so they stay aligned pixel for pixel.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from torch.utils.data import Dataset, Sampler

from geoseg import augment
from geoseg.errors import ConfigError, InputError, first_line
from geoseg.schema import IGNORE
from geoseg.tiles import CONTACT_BAND, LABEL_BAND, ChipTargets, read_chip_targets

__all__ = [
    "BandStats",
    "Chip",
    "ChipDataset",
    "SeededSampler",
    "band_stats",
    "chip_gsd",
    "dihedral",
    "dihedral_view",
    "downsample_contact",
    "downsample_labels",
    "downsample_mean",
    "read_labelled_chip",
    "read_training_chip",
    "split_scenes",
]

logger = logging.getLogger(__name__)


Key = int | tuple[int, int]


# -- scene-wise split ------------------------------------------------------------------------


def split_scenes(
    scenes: Sequence[str],
    *,
    val_scenes: Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split scene ids into training and validation scenes; a scene is never on both sides.

    Chips of one scene are strongly correlated (overlap, same light, same buildings), so a
    chip-wise split would leak; the split is always by whole scenes.

    Args:
        scenes: The scene ids of a store (duplicates are ignored).
        val_scenes: Validation scenes by id; when given, ``val_fraction`` is not used.
        val_fraction: Fraction of the scenes drawn (seeded) for validation, at least one
            scene when > 0; 0 means no validation.
        seed: Seed of the draw.

    Returns:
        ``(train_scenes, val_scenes)``, each sorted.

    Raises:
        InputError: A validation scene is not in the store, or no training scene is left.
        ConfigError: ``val_fraction`` > 0 with a single scene (a split needs two), or out
            of range.
    """
    known = sorted(set(scenes))
    if not known:
        raise InputError("the store has no chips; tile some scenes with `geoseg tile` first")
    if val_scenes is not None:
        missing = [s for s in val_scenes if s not in known]
        if missing:
            raise InputError(
                f"validation scene {missing[0]!r} is not in the store; its scenes are: "
                f"{', '.join(known)}"
            )
        val = sorted(set(val_scenes))
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction}: must be >= 0 and < 1")
        if val_fraction == 0.0:
            val = []
        else:
            if len(known) < 2:
                raise ConfigError(
                    f"the store has a single scene ({known[0]}); a validation split is by "
                    "scene and needs at least two: tile more scenes, or pass --val-fraction 0 "
                    "to train without validation"
                )
            n_val = min(len(known) - 1, max(1, round(val_fraction * len(known))))
            order = np.random.default_rng(seed).permutation(len(known))
            val = sorted(known[i] for i in order[:n_val])
    train = [s for s in known if s not in val]
    if not train:
        raise InputError(
            f"every scene of the store ({', '.join(known)}) is a validation scene; leave at "
            "least one for training"
        )
    return tuple(train), tuple(val)


# -- pure pixel helpers ----------------------------------------------------------------------


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group D4 acting on the last two dimensions.

    ``k % 4`` quarter turns (counter-clockwise, :func:`torch.rot90`), then, for ``k >= 4``,
    a left-right mirror. ``k = 0`` is the identity. The same ``k`` applied to an image
    ``(C, H, W)`` and its mask ``(H, W)`` keeps them aligned pixel for pixel.

    Raises:
        InputError: ``k`` is not in 0..7.
    """
    if not 0 <= k < 8:
        raise InputError(f"k={k}: a D4 element is 0..7")
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def dihedral_view(a: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """:func:`dihedral` on a numpy array, as a view (no copy) of its last two dimensions."""
    if not 0 <= k < 8:
        raise InputError(f"k={k}: a D4 element is 0..7")
    v = np.rot90(a, k % 4, axes=(-2, -1)) if k % 4 else a
    return np.flip(v, axis=-1) if k >= 4 else v


def _pad_to(a: npt.NDArray, factor: int, fill: float | int) -> npt.NDArray:
    h, w = a.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph == 0 and pw == 0:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(a, pad, constant_values=fill)


def downsample_mean(
    image: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], factor: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Block-average an image by ``factor`` over its valid pixels only.

    The one downsampling rule of geoseg: training chips and prediction tiles read at a
    coarser model GSD both go through it, so the two agree at nodata edges.

    Args:
        image: ``(..., C, H, W)``; H and W are padded (as invalid) to a multiple of
            ``factor``.
        valid: ``(..., H, W)`` validity.
        factor: Block edge (1 returns the inputs).

    Returns:
        The ``(..., C, H/f, W/f)`` mean of the valid pixels of each block (0 where a block
        has none) and the blocks' validity ``(..., H/f, W/f)`` (at least one valid pixel).
    """
    if factor == 1:
        return image, valid
    img = _pad_to(np.where(valid[..., None, :, :], image, 0).astype(np.float32), factor, 0)
    v = _pad_to(valid, factor, False)
    *lead, c, h, w = img.shape
    hb, wb = h // factor, w // factor
    sums = img.reshape(*lead, c, hb, factor, wb, factor).sum(axis=(-3, -1), dtype=np.float64)
    counts = v.reshape(*lead, hb, factor, wb, factor).sum(axis=(-3, -1))
    out = np.zeros((*lead, c, hb, wb), dtype=np.float32)
    per_band = counts[..., None, :, :]
    np.divide(sums, per_band, out=out, where=per_band > 0, casting="unsafe")
    return out, counts > 0


def downsample_labels(
    labels: npt.NDArray[np.uint8], factor: int, *, num_classes: int
) -> npt.NDArray[np.uint8]:
    """Block-majority class of each ``factor`` x ``factor`` block, ignoring 255.

    Ties go to the lower class index; a block with no class pixel is 255. Labels are padded
    with 255 to a multiple of ``factor``.
    """
    if factor == 1:
        return labels
    lab = _pad_to(labels, factor, IGNORE)
    h, w = lab.shape
    blocks = lab.reshape(h // factor, factor, w // factor, factor)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in range(num_classes)])
    out = counts.argmax(axis=0).astype(np.uint8)
    out[counts.sum(axis=0) == 0] = IGNORE
    return out


def downsample_contact(contact: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint8]:
    """Block-any contact of each ``factor`` x ``factor`` block, ignoring 255.

    A block with a contact pixel is 1 (a thin band must survive the coarser grid), else 0
    when it has a 0, else 255. Padded with 255 to a multiple of ``factor``.
    """
    if factor == 1:
        return contact
    c = _pad_to(contact, factor, IGNORE)
    h, w = c.shape
    blocks = c.reshape(h // factor, factor, w // factor, factor)
    out = np.full((h // factor, w // factor), IGNORE, dtype=np.uint8)
    out[(blocks == 0).any(axis=(1, 3))] = 0
    out[(blocks == 1).any(axis=(1, 3))] = 1
    return out


# -- band statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation over valid pixels.

    Attributes:
        mean: One value per band.
        std: One value per band (a constant band gets 1.0, so normalising never divides by 0).
        pixels: Number of valid pixels the statistics were computed from.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixels: int


def band_stats(dataset: ChipDataset) -> BandStats:
    """Stream per-band mean/std over the valid pixels of every chip of ``dataset``.

    Chips are read one at a time at the dataset's resolution (after downsampling, what the
    model sees) and combined with Chan et al.'s parallel update in float64, so memory is one
    chip and the result does not suffer from cancellation.

    Raises:
        InputError: No chip has a valid pixel.
    """
    n = 0
    mean: npt.NDArray[np.float64] | None = None
    m2: npt.NDArray[np.float64] | None = None
    for i in range(len(dataset)):
        chip = dataset.load(i)
        px = chip.image[:, chip.valid].astype(np.float64)  # (C, P)
        nb = px.shape[1]
        if nb == 0:
            continue
        mb = px.mean(axis=1)
        m2b = ((px - mb[:, None]) ** 2).sum(axis=1)
        if mean is None or m2 is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean
        tot = n + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta**2 * (n * nb / tot)
        n = tot
    if mean is None or m2 is None or n == 0:
        raise InputError("no valid pixel in the training chips; check the tile store")
    std = np.sqrt(m2 / n)
    flat = [i for i, s in enumerate(std) if not s > 1e-12]
    if flat:
        logger.warning("bands %s are constant in the training chips; their std is set to 1", flat)
        std[flat] = 1.0
    return BandStats(tuple(float(v) for v in mean), tuple(float(v) for v in std), int(n))


# -- the dataset -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chip:
    """One chip as read (before cropping, augmentation and normalisation).

    Attributes:
        image: float32 ``(C, h, w)`` at the dataset's resolution; invalid pixels are 0.
        valid: bool ``(h, w)``.
        labels: uint8 ``(h, w)`` at the dataset's resolution, 255 = ignore (and wherever
            ``valid`` is False).
        native_labels: uint8 labels at the chip's own resolution (``(h*f, w*f)``) when
            the dataset keeps them, else None.
        contact: uint8 ``(h, w)`` contact target (0/1, 255 = ignore) when the dataset reads
            it, else None.
        native_contact: The contact target at the chip's own resolution, with
            ``native_labels``.
    """

    image: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    labels: npt.NDArray[np.uint8]
    native_labels: npt.NDArray[np.uint8] | None
    contact: npt.NDArray[np.uint8] | None = None
    native_contact: npt.NDArray[np.uint8] | None = None


def read_labelled_chip(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.uint8], list[str]]:
    """Read a store chip: image bands, validity (the chip's dataset mask), labels, band names.

    Raises:
        InputError: The chip cannot be read or has no ``label`` band.
    """
    chip = read_training_chip(path)
    assert chip.labels is not None
    return chip.image, chip.valid, chip.labels, chip.names


def read_training_chip(path: str | os.PathLike[str], *, contact: bool = False) -> ChipTargets:
    """Read a store chip with its labels (and its contact target with ``contact``).

    Raises:
        InputError: The chip cannot be read, has no ``label`` band, or (with ``contact``) no
            ``contact`` band.
    """
    try:
        chip = read_chip_targets(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(
            f"{path}: cannot read chip ({first_line(exc)}); re-run `geoseg tile`"
        ) from None
    if chip.labels is None:
        raise InputError(
            f"{path}: chip has no '{LABEL_BAND}' band; training needs a store tiled from "
            "labelled scenes"
        )
    if contact and chip.contact is None:
        raise InputError(
            f"{path}: chip has no '{CONTACT_BAND}' band; re-run `geoseg tile` with "
            "--footprints on this store"
        )
    return chip


class ChipDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Labelled chips of a tile store as ``(image, mask)`` tensors.

    ``image`` is float32 ``(C, H, W)``, normalised per band with ``mean``/``std``, 0 on
    invalid pixels; ``mask`` is uint8 ``(H, W)`` class indices with 255 wherever the label is
    unknown or the chip's dataset mask is invalid, so the loss ignores those pixels (widen it
    with ``.long()`` for the losses, best on the device). With ``contact`` the mask is
    ``(2, H, W)``: the classes, then the contact target (0/1, 255 = ignore).

    Per sample, in order: read (optionally cached), downsample by ``downsample`` (block mean
    of valid pixels for the image, block majority for the labels), a random ``crop``, a random
    D4 element when ``augment``, a random ``photometric`` change, normalisation. Random
    choices come from the sample's seed: index the dataset with ``(i, seed)`` (see
    :class:`SeededSampler`); a plain ``i`` means seed 0.

    Args:
        paths: Chip GeoTIFFs. Workers open them themselves.
        num_classes: Number of classes of the store's schema.
        mean: Per-band means (None: no normalisation).
        std: Per-band standard deviations (None: no normalisation).
        crop: Edge of a random square crop, in pixels after downsampling (None: whole chip).
        augment: Apply a random D4 transform.
        downsample: Integer factor by which chips are read coarser (GSD x ``downsample``).
        native_labels: Return the labels at the chip's own resolution instead (evaluation:
            predictions are upsampled and scored against the original labels). Needs
            ``crop=None`` and ``augment=False``.
        cache: Keep chips in memory after the first read (per process: each DataLoader
            worker keeps its own).
        contact: Read the chips' contact target too (a store tiled with footprints); it is
            downsampled by block-any (:func:`downsample_contact`).
        photometric: Strength of a random photometric change of the spectral bands
            (:func:`geoseg.augment.photometric`), after the crop and D4 draws; 0 = off.
        bands: The chips' band names (needed by ``photometric``).

    Raises:
        ConfigError: Bad factors or incompatible options.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop: int | None = None,
        augment: bool = False,
        downsample: int = 1,
        native_labels: bool = False,
        cache: bool = False,
        contact: bool = False,
        photometric: float = 0.0,
        bands: Sequence[str] | None = None,
    ) -> None:
        if downsample < 1:
            raise ConfigError(f"downsample={downsample}: must be an integer >= 1")
        if crop is not None and crop < 1:
            raise ConfigError(f"crop={crop}: must be >= 1")
        if native_labels and (crop is not None or augment):
            raise ConfigError("native_labels needs whole chips: no crop and no augmentation")
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std, or neither")
        if not 0 <= photometric < math.inf or (photometric and bands is None):
            raise ConfigError(f"photometric={photometric}: must be >= 0, with bands= given")
        self.paths = [str(p) for p in paths]
        self.num_classes = num_classes
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        self.crop = crop
        self.augment = augment
        self.downsample = downsample
        self.native_labels = native_labels
        self.cache = cache
        self.contact = contact
        self.photometric = photometric
        self.bands = None if bands is None else tuple(bands)
        self._cache: dict[int, Chip] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the per-band mean and std used from now on (before handing it to a loader)."""
        if len(mean) != len(std):
            raise ConfigError(f"{len(mean)} means but {len(std)} stds; give one of each per band")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def load(self, i: int) -> Chip:
        """Chip ``i`` read and downsampled, not cropped, augmented or normalised."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        read = read_training_chip(self.paths[i], contact=self.contact)
        image, valid, labels = read.image, read.valid, read.labels
        assert labels is not None
        f = self.downsample
        small, svalid = downsample_mean(image, valid, f)
        slabels = downsample_labels(labels, f, num_classes=self.num_classes)
        slabels = np.where(svalid, slabels, IGNORE).astype(np.uint8)
        scontact = None
        if self.contact:
            assert read.contact is not None
            scontact = downsample_contact(read.contact, f)
            scontact = np.where(svalid, scontact, IGNORE).astype(np.uint8)
        chip = Chip(
            small,
            svalid,
            slabels,
            labels if self.native_labels else None,
            contact=scontact,
            native_contact=read.contact if self.native_labels and self.contact else None,
        )
        if self.cache:
            self._cache[i] = chip
        return chip

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        chip = self.load(int(i))
        rng = np.random.default_rng(int(seed))
        image, valid = chip.image, chip.valid
        # the targets: (H, W) classes, or (2, H, W) classes and contact
        labels: npt.NDArray[np.uint8] = chip.labels
        if self.native_labels and chip.native_labels is not None:
            labels = chip.native_labels
        contact = chip.native_contact if self.native_labels else chip.contact
        target = labels if contact is None else np.stack([labels, contact])
        if self.crop is not None:
            h, w = labels.shape
            c = self.crop
            if c > h or c > w:
                raise ConfigError(
                    f"crop {c} px is larger than chip {self.paths[i]} ({h} x {w} px after "
                    f"downsampling by {self.downsample}); use a smaller --chip-size"
                )
            r0 = int(rng.integers(0, h - c + 1))
            c0 = int(rng.integers(0, w - c + 1))
            image = image[:, r0 : r0 + c, c0 : c0 + c]
            valid = valid[r0 : r0 + c, c0 : c0 + c]
            target = target[..., r0 : r0 + c, c0 : c0 + c]
        if self.augment:
            # Views only: the one copy below writes the transformed, normalised pixels.
            k = int(rng.integers(0, 8))
            image, valid, target = (dihedral_view(a, k) for a in (image, valid, target))
        if self.photometric and self.bands is not None:  # draws after the crop's and D4's
            image = augment.photometric(image, valid, self.bands, rng, strength=self.photometric)
        out = np.empty(image.shape, dtype=np.float32)
        if self.mean is not None and self.std is not None:
            np.subtract(image, self.mean[:, None, None], out=out)
            np.divide(out, self.std[:, None, None], out=out)
        else:
            out[...] = image
        np.copyto(out, np.float32(0.0), where=~valid[None])
        # Labels travel as uint8 (an eighth of int64 through worker queues, pinning and the
        # host-to-device copy); the training loop widens them on the device.
        y = np.array(target, dtype=np.uint8, order="C", copy=True)  # never the cached chip
        return torch.from_numpy(out), torch.from_numpy(y)


class SeededSampler(Sampler[tuple[int, int]]):
    """Yield ``(index, sample_seed)`` keys, shuffled or in order, reproducibly per epoch.

    The order and the per-sample seeds of epoch ``e`` come from a :class:`torch.Generator`
    seeded with ``(seed, e)`` alone, so epoch ``e`` is the same in an uninterrupted and in a
    resumed run, with any number of DataLoader workers.

    Args:
        length: Dataset length.
        seed: Run seed.
        shuffle: Shuffle the order (training) or keep it (validation).
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool = True) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and seeds are yielded next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
        order = torch.randperm(self.length, generator=g) if self.shuffle else None
        seeds = torch.randint(0, 2**62, (self.length,), generator=g)
        for j in range(self.length):
            i = int(order[j]) if order is not None else j
            yield i, int(seeds[j])


def chip_gsd(path: str | os.PathLike[str]) -> float:
    """Ground sample distance of a chip (pixel width in CRS units), from its transform."""
    with rasterio.open(path) as ds:
        return float(abs(ds.transform.a)) if ds.transform is not None else math.nan

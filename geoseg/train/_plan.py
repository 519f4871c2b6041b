"""What a run trains on, derived from the store and the config before any model exists.

The store's schema and bands, the split by scene, the chips of each side, the class weights
(from the chip index's class histogram) and the chip sizes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geoseg.data import chip_gsd, split_scenes
from geoseg.errors import ConfigError, InputError, SchemaError
from geoseg.schema import ClassSchema
from geoseg.tiles import read_store, store_contact
from geoseg.train._config import TrainConfig
from geoseg.train._contact import contact_pos_weight

__all__ = ["TrainPlan", "class_weights_from_index", "plan_training"]

logger = logging.getLogger("geoseg.train")


@dataclass(frozen=True)
class TrainPlan:
    """What a run trains on, derived from the store and the config (no model yet)."""

    schema: ClassSchema
    bands: tuple[str, ...]
    train_scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]
    train_paths: list[Path]
    val_paths: list[Path]
    class_weights: list[float] | None
    model_chip: int
    crop: int | None
    gsd: float
    contact: bool = False
    """The store has a contact target and the run learns it (``contact_weight > 0``)."""
    contact_pos_weight: float = 1.0
    """Positive weight of the contact BCE (from the training chips' contact pixels)."""


def plan_training(store: str | os.PathLike[str], config: TrainConfig) -> TrainPlan:
    """The plan of a run on ``store`` with ``config``.

    Raises:
        InputError: Not a labelled store, no chips, a malformed schema, unknown validation
            scenes, chips without the contact target of a store that has one.
        ConfigError: Class weights without a ``wce`` term, a crop larger than the chips, a
            single-scene store with validation.
    """
    meta, index = read_store(store)
    if not meta.get("labels"):
        raise InputError(
            f"{store}: the tile store has no labels; training needs a store tiled from "
            "labelled scenes"
        )
    if len(index) == 0:
        raise InputError(f"{store}: the tile store has no chips; tile some scenes first")
    try:
        schema = ClassSchema.from_dict(meta["schema"], source=str(store))
    except SchemaError as exc:
        raise InputError(f"{store}: tiles.json has a malformed schema ({exc})") from None
    train_scenes, val_scenes = split_scenes(
        [str(s) for s in index["scene"]],
        val_scenes=config.val_scenes,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    weights = None
    if config.class_weights != "none":
        if "wce" not in config.loss.replace(" ", "").lower():
            raise ConfigError(
                f"class weights apply to the 'wce' loss term only, and loss {config.loss!r} "
                "has none; use e.g. --loss wce+dice, or --class-weights none"
            )
        weights = class_weights_from_index(
            index, train_scenes, len(schema), method=config.class_weights
        )
        logger.info("class weights (%s): %s", config.class_weights, [round(w, 3) for w in weights])
    chip_size = int(meta.get("size", 0))
    model_chip = -(-chip_size // config.downsample)
    if config.chip_size is not None and config.chip_size > model_chip:
        raise ConfigError(
            f"chip_size={config.chip_size}: larger than the store's chips ({chip_size} px, "
            f"{model_chip} px after downsampling by {config.downsample}); use at most "
            f"{model_chip}"
        )
    root = Path(store)

    def paths(scenes: tuple[str, ...]) -> list[Path]:
        return [root / p for p in sorted(index[index["scene"].isin(scenes)]["path"])]

    train_paths = paths(train_scenes)
    contact = store_contact(meta) and config.contact_weight > 0
    pos_weight = 1.0
    if contact:
        _check_contact(store, index)
        pos_weight = contact_pos_weight(index, train_scenes)
        logger.info(
            "contact target: weight %g, positive weight %.3g", config.contact_weight, pos_weight
        )
    elif store_contact(meta):
        logger.info("contact target of the store not learnt (contact_weight 0)")
    return TrainPlan(
        schema=schema,
        bands=tuple(str(b) for b in meta["bands"]),
        train_scenes=train_scenes,
        val_scenes=val_scenes,
        train_paths=train_paths,
        val_paths=paths(val_scenes),
        class_weights=weights,
        model_chip=model_chip,
        crop=config.chip_size,
        gsd=chip_gsd(train_paths[0]) * config.downsample,
        contact=contact,
        contact_pos_weight=pos_weight,
    )


def _check_contact(store: str | os.PathLike[str], index: Any) -> None:
    """Refuse a store with a contact target some of whose chips lack it.

    Raises:
        InputError: The index has no ``contact`` column, or chips without the band.
    """
    missing = len(index) if "contact" not in index.columns else int((index["contact"] < 0).sum())
    if missing:
        raise InputError(
            f"{store}: {missing} chip(s) have no contact target although the store has one; "
            "re-run `geoseg tile` with --footprints on it"
        )


def class_weights_from_index(
    index: Any,
    scenes: Sequence[str],
    num_classes: int,
    *,
    method: Literal["median_frequency", "sqrt_median_frequency"] = "median_frequency",
) -> list[float]:
    """Class weights from the class histogram of ``scenes``' chips.

    Args:
        index: The store's chip index (a ``scene`` column, a ``class_<c>`` pixel count
            per class).
        scenes: The scenes whose chips count (the training scenes).
        num_classes: Number of classes.
        method: See :func:`geoseg.losses.class_weights_from_histogram`.
    """
    from geoseg.losses import class_weights_from_histogram

    rows = index[index["scene"].isin(list(scenes))]
    hist = [int(rows[f"class_{c}"].sum()) for c in range(num_classes)]
    return class_weights_from_histogram(hist, method=method)

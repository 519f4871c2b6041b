"""Appearance families of synthetic scenes: the same geometry under other palettes.

Style 0 is the Potsdam-like palette of :mod:`geoseg.synth._objects`. Another style recolours
the layout's objects by class after the layout is drawn (no random draw, so the geometry,
labels, DSM and truth of a seed are those of style 0): each class gets a :class:`Tint`, per
band gains after a rotation of the RGB chroma about the grey axis. This gives scenes that
the generator does not produce with its own settings, for testing a model on appearance it
was not trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoseg.augment import chroma_rotation
from geoseg.errors import InputError
from geoseg.synth._objects import BLD, CLUT, GRASS, IMP, TREE, VEG, Colour, Layout

__all__ = ["STYLES", "Tint", "check_style", "restyle"]


@dataclass(frozen=True)
class Tint:
    """A colour change: rotate the RGB chroma by ``rotate_deg``, then multiply by ``gains``.

    Attributes:
        gains: Factors for red, green, blue and IR.
        rotate_deg: Rotation of (R, G, B) about the grey axis (1, 1, 1), in degrees
            (positive: red towards yellow/green).
    """

    gains: tuple[float, float, float, float]
    rotate_deg: float = 0.0

    def apply(self, colour: Colour) -> Colour:
        """``colour`` tinted, clipped to 0..255."""
        rgb = np.asarray(colour[:3], dtype=np.float64)
        if self.rotate_deg:
            rgb = chroma_rotation(math.radians(self.rotate_deg)) @ rgb
        vals = [*rgb, colour[3]]
        r, g, b, ir = (
            float(np.clip(v * k, 0.0, 255.0)) for v, k in zip(vals, self.gains, strict=True)
        )
        return (r, g, b, ir)


STYLES: tuple[dict[int, Tint], ...] = (
    {},
    {
        # ochre and slate roofs instead of red and grey, with more IR
        BLD: Tint((0.96, 0.98, 1.12, 1.18), rotate_deg=22.0),
        # dry, yellow grass: more red, less IR
        VEG: Tint((1.3, 1.1, 0.92, 0.78)),
        # darker trees
        TREE: Tint((0.78, 0.82, 0.84, 0.9)),
        # warmer, lighter paving
        IMP: Tint((1.08, 1.04, 0.96, 1.04)),
    },
    {
        # dark, wet-looking roofs with a crimson cast
        BLD: Tint((0.8, 0.78, 0.86, 0.85), rotate_deg=-14.0),
        # lush, blue-green grass with strong IR
        VEG: Tint((0.82, 1.06, 1.02, 1.15)),
        # light, yellow-green trees
        TREE: Tint((1.2, 1.16, 0.92, 1.05)),
        # dark paving
        IMP: Tint((0.86, 0.87, 0.9, 0.9)),
        # faded clutter
        CLUT: Tint((0.9, 0.92, 0.95, 0.95), rotate_deg=20.0),
    },
)
"""Per style, the tint of each class (classes not named keep their colours).

0: Potsdam-like (the palette of :mod:`geoseg.synth._objects`); 1: ochre and slate roofs, dry
yellow grass, dark trees, warm paving; 2: dark crimson and grey roofs, lush blue-green grass,
light yellow-green trees, dark paving.
"""


def check_style(style: int) -> None:
    """Raise :class:`~geoseg.errors.InputError` unless ``style`` is one of :data:`STYLES`."""
    if not 0 <= style < len(STYLES):
        raise InputError(f"style={style}: use one of 0..{len(STYLES) - 1}")


def restyle(lay: Layout, style: int) -> None:
    """Recolour the objects of ``lay`` (and its background grass) in place for ``style``."""
    check_style(style)
    tints = STYLES[style]
    if not tints:
        return
    for obj in {id(o): o for o in lay.ordered()}.values():  # each object once
        tint = tints.get(obj.cls)
        if tint is not None:
            obj.colour = tint.apply(obj.colour)
    if VEG in tints:
        lay.ground = tints[VEG].apply(GRASS[0])

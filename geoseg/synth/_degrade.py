"""A fixed, seeded degradation of a rendered image: the same ground seen by a worse camera.

``geoseg synth --degrade S`` applies it to the RGBIR image only, after rendering: the labels,
DSM and true polygons are those of the clean scene of the same seed, so a model trained on
clean scenes can be scored on degraded ones pixel for pixel.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from geoseg.augment import blur, haze
from geoseg.errors import InputError

MAX_DEGRADE = 2.0
"""The largest degradation strength."""

_BANDS = ("red", "green", "blue", "nir")
_KEY = (0x64656772, 0x61646521)  # a random stream of its own: the scene's stream is unchanged
_BLUR_SIGMA = 1.2  # px at strength 1
_HAZE = 0.25  # airlight weight at strength 1
_AIR_DN = 235.0  # the bright reference of the haze, in digital numbers
_GAIN = 0.12  # per-band gains within 1 +- this at strength 1
_NOISE_READ, _NOISE_SHOT = 2.0, 0.25  # noise std = s * sqrt(read^2 + shot^2 * DN)


def check_degrade(strength: float) -> None:
    """Raise :class:`~geoseg.errors.InputError` unless 0 <= ``strength`` <= :data:`MAX_DEGRADE`."""
    if not (math.isfinite(strength) and 0.0 <= strength <= MAX_DEGRADE):
        raise InputError(f"degrade={strength}: the strength must be >= 0 and <= {MAX_DEGRADE}")


def degrade(
    image: npt.NDArray[np.uint8], *, strength: float, seed: int, index: int
) -> npt.NDArray[np.uint8]:
    """``image`` (``(4, H, W)`` uint8 red, green, blue, IR) as a worse camera would see it.

    In the order light meets them: haze (blend towards a grey-blue airlight, weight ``0.25 *
    s``, half that in the IR), optical blur (gaussian, ``sigma = 1.2 * s`` px), a colour
    shift (per-band gains, uniform in ``1 +- 0.12 * s``), sensor noise (gaussian, std ``s *
    sqrt(4 + 0.0625 * DN)``: read noise and shot noise), rounding to uint8. The gains and
    the noise are drawn from ``(seed, index)`` through a stream of their own.

    Args:
        image: The rendered image (not modified).
        strength: ``s``, 0..2; 0 returns ``image`` itself.
        seed: The scene's seed.
        index: The scene's index.

    Returns:
        The degraded image, uint8 of the same shape.

    Raises:
        InputError: ``strength`` out of range.
    """
    check_degrade(strength)
    if strength == 0:
        return image
    rng = np.random.default_rng((seed, index, *_KEY))
    gains = 1.0 + rng.uniform(-_GAIN, _GAIN, len(_BANDS)) * strength
    out = np.empty_like(image)
    for b, name in enumerate(_BANDS):  # one float band at a time: scenes can be large
        x = image[b : b + 1].astype(np.float32)
        haze(x, (name,), _HAZE * strength, _AIR_DN)
        x = blur(x, _BLUR_SIGMA * strength)
        x *= np.float32(gains[b])
        std = np.sqrt(np.maximum(x, 0) * np.float32(_NOISE_SHOT**2) + np.float32(_NOISE_READ**2))
        std *= np.float32(strength)
        std *= rng.standard_normal(x.shape, dtype=np.float32)
        x += std
        x += 0.5
        np.clip(x, 0, 255, out=x)
        out[b] = x[0]
    return out

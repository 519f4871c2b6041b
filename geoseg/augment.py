"""Photometric augmentation of one training chip: how the same ground looks on another day.

:func:`photometric` draws, from a numpy :class:`~numpy.random.Generator`, a random change of
the chip's appearance: brightness, contrast, a colour shift, a gaussian blur, sensor noise
and haze. Only *spectral* bands change (:func:`is_spectral`); height bands (DSM, nDSM, any
band whose name says height or elevation) and bands of unknown meaning are never touched,
and invalid pixels keep their values. The primitives (:func:`blur`, :func:`haze`) are
shared with the synthetic scenes' fixed degradation (``geoseg synth --degrade``).

Values are raw digital numbers (before normalisation). The result is clipped to the
chip's value range: below at 0 (when the chip has no negative value), above at the ceiling
of its apparent data type, 255 when the chip's spectral maximum is <= 255, else 65535 when
it is <= 65535, else not at all; pass ``value_range`` to set the range explicitly (float
reflectances, 12-bit data). Clipping at the type's ceiling rather than at the chip's own
maximum keeps a brightened dark chip from being flattened at its brightest pixel.

Everything is vectorised over the bands; a 5 x 128 x 128 chip costs 1 to 2 ms on one core.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from geoseg.errors import ConfigError

__all__ = [
    "AIRLIGHT",
    "blur",
    "chroma_rotation",
    "haze",
    "is_height",
    "is_spectral",
    "photometric",
    "spectral_bands",
]

_HEIGHT_RE = re.compile(r"dsm|dtm|height|elev|^dem$|^hag$")
_SPECTRAL = frozenset(
    {"red", "green", "blue", "nir", "ir", "rededge", "red_edge", "coastal", "yellow", "pan"}
)
_SPECTRAL_RE = re.compile(r"^(swir|rededge|red_edge|re|nir|vnir)_?[0-9]*$")

AIRLIGHT: dict[str, float] = {
    "red": 0.84,
    "green": 0.88,
    "blue": 0.96,
    "coastal": 0.98,
    "yellow": 0.86,
    "pan": 0.88,
}
"""Haze colour: per band, the fraction of the bright reference (bands not named: 0.78).

A bright grey-blue, as scattered skylight: blue strongest; near and short-wave infrared get
the default, and their haze weight is halved (:func:`haze`), since scattering falls with
wavelength.
"""

_AIR_DEFAULT = 0.78

# Per-op probabilities at any strength > 0 (the strength scales magnitudes, not how often).
_P_BRIGHT, _P_CONTRAST, _P_COLOUR, _P_BLUR, _P_NOISE, _P_HAZE = 0.8, 0.8, 0.5, 0.3, 0.3, 0.25


def is_height(name: str) -> bool:
    """Whether band ``name`` is a height (``dsm``, ``ndsm``, ``*height*``, ``*elev*``, ...)."""
    return bool(_HEIGHT_RE.search(name.lower()))


def is_spectral(name: str) -> bool:
    """Whether band ``name`` is a spectral band (red, green, blue, nir, rededge, swir1, ...).

    Height bands are never spectral; a name that is neither (``ndvi``, ``b1``) is not
    spectral either, so photometric changes leave it alone.
    """
    n = name.lower()
    if is_height(n):
        return False
    return n in _SPECTRAL or bool(_SPECTRAL_RE.match(n))


def spectral_bands(bands: Sequence[str]) -> tuple[int, ...]:
    """Indices of the spectral bands of ``bands`` (see :func:`is_spectral`)."""
    return tuple(i for i, b in enumerate(bands) if is_spectral(b))


def _is_infrared(name: str) -> bool:
    n = name.lower()
    return n in ("nir", "ir", "vnir") or n.startswith(("swir", "nir"))


def blur(x: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Gaussian blur of the last two axes of ``x`` with ``sigma`` px (edges reflected)."""
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return x
    return gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (sigma, sigma), truncate=3.0)


def haze(
    x: npt.NDArray[np.float32],
    bands: Sequence[str],
    weight: float,
    bright: float,
) -> npt.NDArray[np.float32]:
    """Blend ``x`` (``(C, H, W)``, one entry of ``bands`` per band) towards a hazy airlight.

    ``x' = (1 - w_b) x + w_b A_b`` with ``A_b = AIRLIGHT[band] * bright`` and ``w_b =
    weight`` (half of it for infrared bands). Modifies and returns ``x``.
    """
    for b, name in enumerate(bands):
        w = weight * (0.5 if _is_infrared(name) else 1.0)
        air = AIRLIGHT.get(name.lower(), _AIR_DEFAULT) * bright
        x[b] *= np.float32(1.0 - w)
        x[b] += np.float32(w * air)
    return x


def _ceiling(top: float) -> float:
    if top <= 255.0:
        return 255.0
    if top <= 65535.0:
        return 65535.0
    return math.inf


def photometric(
    image: npt.NDArray[np.float32],
    valid: npt.NDArray[np.bool_],
    bands: Sequence[str],
    rng: np.random.Generator,
    *,
    strength: float = 1.0,
    value_range: tuple[float, float] | None = None,
) -> npt.NDArray[np.float32]:
    """A randomly re-photographed copy of one chip (spectral bands only).

    Each change is applied with its own probability; ``strength`` scales the magnitudes
    (1 = the defaults below, 0 = identity, 2 = twice as far):

    * brightness (p 0.8): one factor ``exp(U(-0.25, 0.25) * s)`` for all spectral bands;
    * contrast (p 0.8): ``mean + f * (x - mean)`` around each band's valid mean, one
      ``f = exp(U(-0.25, 0.25) * s)`` for all spectral bands;
    * colour (p 0.5): per-band gains ``exp(U(-0.08, 0.08) * s)``, and half of the time a
      rotation of the RGB chroma about the grey axis by ``U(-10, 10) * s`` degrees;
    * blur (p 0.3): gaussian, ``sigma = U(0, 1.5) * min(s, 1)`` px, the same for all bands
      (normalised over valid pixels, so nodata does not bleed in);
    * noise (p 0.3): gaussian, per band ``std = U(0, 0.05) * s`` x the band's valid std;
    * haze (p 0.25): :func:`haze` with ``weight = U(0, 0.3) * s`` (at most 0.6) towards a
      grey-blue airlight at the chip's spectral maximum.

    The random draws happen in a fixed order whatever is applied, so a seed always gives the
    same chip. The result is clipped to the value range (see the module docstring).

    Args:
        image: float32 ``(C, H, W)`` raw values (not normalised).
        valid: bool ``(H, W)``; invalid pixels are returned unchanged.
        bands: One name per band of ``image``.
        rng: The source of every random choice.
        strength: Magnitude scale, >= 0.
        value_range: ``(low, high)`` to clip to; None infers it (see the module docstring).

    Returns:
        A new float32 array of ``image``'s shape (``image`` is not modified).

    Raises:
        ConfigError: ``bands`` does not name every band, or ``strength`` < 0.
    """
    if len(bands) != image.shape[0]:
        raise ConfigError(
            f"{len(bands)} band names ({', '.join(bands)}) for a chip of {image.shape[0]} "
            "bands; give one name per band"
        )
    if not (math.isfinite(strength) and strength >= 0):
        raise ConfigError(f"strength={strength}: the photometric strength must be >= 0")
    out = np.array(image, dtype=np.float32, copy=True)
    idx = spectral_bands(bands)
    if strength == 0 or not idx or not valid.any():
        return out
    s = float(strength)
    # Every draw, in a fixed order.
    u = rng.random(6)
    bright = math.exp(rng.uniform(-0.25, 0.25) * s)
    contrast = math.exp(rng.uniform(-0.25, 0.25) * s)
    gains = np.exp(rng.uniform(-0.08, 0.08, len(idx)) * s).astype(np.float32)
    rotate = rng.random() < 0.5
    angle = math.radians(rng.uniform(-10.0, 10.0) * s)
    sigma = rng.uniform(0.0, 1.5) * min(s, 1.0)
    noise_frac = rng.uniform(0.0, 0.05, len(idx)) * s
    haze_w = min(0.6, rng.uniform(0.0, 0.3) * s)
    noise_seed = int(rng.integers(0, 2**63))

    sel = list(idx)
    names = [bands[i] for i in idx]
    x = out[sel]  # (S, H, W) copy of the spectral bands
    every = bool(valid.all())
    px = x.reshape(len(sel), -1).copy() if every else x[:, valid]  # (S, P) of the input
    lo_obs = float(px.min())
    top = float(px.max())
    if value_range is not None:
        lo, hi = value_range
    else:
        lo, hi = (0.0 if lo_obs >= 0 else -math.inf), _ceiling(top)
    # Statistics of the input, scaled as the affine changes below scale them.
    scale = np.float32(1.0)
    if u[0] < _P_BRIGHT:
        x *= np.float32(bright)
        scale *= np.float32(bright)
        top *= bright
    if u[1] < _P_CONTRAST:
        m = px.mean(axis=1)[:, None, None] * scale
        x -= m
        x *= np.float32(contrast)
        x += m
        scale *= np.float32(contrast)
    if u[2] < _P_COLOUR:
        x *= gains[:, None, None]
        rgb = [names.index(c) for c in ("red", "green", "blue") if c in names]
        if rotate and len(rgb) == 3:
            x[rgb] = np.tensordot(chroma_rotation(angle).astype(np.float32), x[rgb], axes=1)
    if u[3] < _P_BLUR and sigma >= 0.2:
        if every:
            x = blur(x, sigma)
        else:
            w = blur(valid.astype(np.float32), sigma)
            x = blur(x * valid, sigma)
            np.divide(x, w, out=x, where=w > 1e-6)
    if u[4] < _P_NOISE:
        g = np.random.default_rng(noise_seed)
        n = g.standard_normal(x.shape, dtype=np.float32)
        n *= (noise_frac.astype(np.float32) * px.std(axis=1) * scale)[:, None, None]
        x += n
    if u[5] < _P_HAZE and haze_w > 0:
        haze(x, names, haze_w, top)
    np.clip(x, lo, hi, out=x)
    if not every:
        np.copyto(x, out[sel], where=~valid[None])
    out[sel] = x
    return out


def chroma_rotation(angle: float) -> npt.NDArray[np.float64]:
    """3 x 3 rotation of RGB vectors by ``angle`` about the grey axis (1, 1, 1) (Rodrigues)."""
    c, s = math.cos(angle), math.sin(angle)
    k = 1.0 / math.sqrt(3.0)
    cross = np.array([[0, -k, k], [k, 0, -k], [-k, k, 0]])
    outer = np.full((3, 3), k * k)
    return c * np.eye(3) + s * cross + (1 - c) * outer

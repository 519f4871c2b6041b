"""Photometric augmentation (geoseg.augment) and its use by ChipDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.augment import blur, haze, is_height, is_spectral, photometric, spectral_bands
from geoseg.data import ChipDataset
from geoseg.errors import ConfigError
from geoseg.tiles import read_store

BANDS = ("red", "green", "blue", "nir", "ndsm")


def chip(seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A uint8-range RGBIR chip with an nDSM band and an invalid corner."""
    g = np.random.default_rng(seed)
    spectral = g.integers(20, 230, (4, size, size)).astype(np.float32)
    ndsm = g.uniform(0.0, 25.0, (1, size, size)).astype(np.float32)
    image = np.concatenate([spectral, ndsm])
    valid = np.ones((size, size), dtype=bool)
    valid[:12, :20] = False
    image[:, ~valid] = 0.0
    return image, valid


def test_band_kinds() -> None:
    for name in ("red", "Green", "blue", "nir", "ir", "rededge", "re1", "swir1", "swir_2", "pan"):
        assert is_spectral(name), name
    for name in ("dsm", "ndsm", "height", "height_m", "elevation", "dtm"):
        assert is_height(name) and not is_spectral(name), name
    for name in ("ndvi", "b1", "label", "one"):
        assert not is_spectral(name), name
    assert spectral_bands(BANDS) == (0, 1, 2, 3)


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_spectral_bands_change_height_and_invalid_pixels_do_not(strength: float) -> None:
    image, valid = chip()
    before = image.copy()
    changed = 0
    for seed in range(20):
        out = photometric(image, valid, BANDS, np.random.default_rng(seed), strength=strength)
        assert out.shape == image.shape and out.dtype == np.float32
        np.testing.assert_array_equal(out[4], image[4])  # the nDSM
        np.testing.assert_array_equal(out[:, ~valid], image[:, ~valid])  # invalid pixels
        assert out.min() >= 0.0 and out.max() <= 255.0  # the uint8 range
        changed += int(not np.array_equal(out[:4], image[:4]))
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert changed >= 18  # nearly every draw changes something


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    image, valid = chip()
    a = photometric(image, valid, BANDS, np.random.default_rng(7))
    b = photometric(image, valid, BANDS, np.random.default_rng(7))
    c = photometric(image, valid, BANDS, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_strength_zero_is_the_identity() -> None:
    image, valid = chip()
    out = photometric(image, valid, BANDS, np.random.default_rng(3), strength=0.0)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_bands_of_unknown_meaning_and_height_names_are_untouched() -> None:
    image, valid = chip()
    names = ("red", "ndvi", "blue", "height_m", "elevation")
    for seed in range(5):
        out = photometric(image, valid, names, np.random.default_rng(seed), strength=2.0)
        np.testing.assert_array_equal(out[[1, 3, 4]], image[[1, 3, 4]])


def test_sixteen_bit_values_keep_their_range() -> None:
    image, valid = chip()
    image[:4] *= 40.0  # 12-bit-like values: clipped at the uint16 ceiling, not at 255
    for seed in range(10):
        out = photometric(image, valid, BANDS, np.random.default_rng(seed), strength=2.0)
        assert out.max() <= 65535.0 and out.min() >= 0.0
        assert out[:4].max() > 255.0
    out = photometric(
        image, valid, BANDS, np.random.default_rng(0), strength=2.0, value_range=(100.0, 200.0)
    )
    assert out[:4, valid].min() >= 100.0 and out[:4, valid].max() <= 200.0


def test_bad_arguments() -> None:
    image, valid = chip()
    with pytest.raises(ConfigError, match="one name per band"):
        photometric(image, valid, BANDS[:4], np.random.default_rng(0))
    with pytest.raises(ConfigError, match="strength=-1"):
        photometric(image, valid, BANDS, np.random.default_rng(0), strength=-1.0)


def test_primitives_blur_and_haze() -> None:
    x = np.zeros((1, 21, 21), dtype=np.float32)
    x[0, 10, 10] = 100.0
    y = blur(x, 1.0)
    assert y.sum() == pytest.approx(100.0, rel=1e-4) and y[0, 10, 10] < 50.0
    assert blur(x, 0.0) is x
    z = haze(np.full((2, 4, 4), 100.0, dtype=np.float32), ("blue", "nir"), 0.2, 200.0)
    assert z[0, 0, 0] == pytest.approx(0.8 * 100 + 0.2 * 0.96 * 200)
    assert z[1, 0, 0] == pytest.approx(0.9 * 100 + 0.1 * 0.78 * 200)  # half the haze in IR


def test_dataset_applies_it_after_the_crop_and_d4_draws(train_store: Path) -> None:
    _, index = read_store(train_store)
    paths = [train_store / p for p in sorted(index["path"])]
    bands = ("red", "green", "blue", "nir")
    plain = ChipDataset(paths, num_classes=6, crop=32, augment=True)
    photo = ChipDataset(paths, num_classes=6, crop=32, augment=True, photometric=1.0, bands=bands)
    differ = 0
    for key in [(0, 11), (1, 12), (2, 13), (3, 14)]:
        (x0, y0), (x1, y1) = plain[key], photo[key]
        assert y0.equal(y1)  # the same crop and D4 element: the draws before are unchanged
        assert x1.shape == x0.shape and photo[key][0].equal(x1)
        differ += int(not x0.equal(x1))
    assert differ >= 3
    with pytest.raises(ConfigError, match="photometric"):
        ChipDataset(paths, num_classes=6, photometric=1.0)
    with pytest.raises(ConfigError, match="photometric"):
        ChipDataset(paths, num_classes=6, photometric=-0.5, bands=bands)

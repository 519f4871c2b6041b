from __future__ import annotations

import geoseg


def test_public_surface_is_curated() -> None:
    public = {n for n in dir(geoseg) if not n.startswith("_")} - {"annotations"}
    submodules = {n for n in public if type(getattr(geoseg, n)).__name__ == "module"}
    assert public - submodules == set(geoseg.__all__) - {"__version__"}
    for name in geoseg.__all__:
        assert hasattr(geoseg, name)

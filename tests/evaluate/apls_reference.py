"""CosmiQ's reference APLS (the ``apls`` package on PyPI, 0.1.0), for comparison tests only.

``pip install apls`` cannot be satisfied here or in CI: the package pins ``GDAL==2.4.0`` (a
source build against a GDAL 2.4 library) and imports ``osgeo``, ``fiona`` and ``cv2`` at
module level, none of which its APLS functions (``make_graphs``, ``compute_apls_metric``)
call. So the tests take it installed without its dependencies::

    pip install --no-deps apls==0.1.0 utm==0.9.0

and, while it loads, give those three modules (only when they are absent) empty stand-ins.
Nothing of the package is copied here; a test that needs it skips, saying why, when it is
not installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import types
from typing import Any

import pytest

from geoseg.evaluate.roads import MIN_PATH_LENGTH_M, RoadGraph

INSTALL = "pip install --no-deps apls==0.1.0 utm==0.9.0"
PRED_IDS = 10_000_000
"""First node id of the proposal graph: the reference needs ids unique across both graphs."""


def load() -> Any:
    """The reference's ``apls.apls`` module, or a skip that says how to install it."""
    for name in ("apls", "utm", "networkx"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"the reference APLS package is not installed ({name} missing): {INSTALL}")
    stubs = []
    for name in ("osgeo", "fiona", "cv2"):
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue
        stub = types.ModuleType(name)
        if name == "osgeo":
            for sub in ("gdal", "ogr", "osr"):
                setattr(stub, sub, types.ModuleType(f"osgeo.{sub}"))
        sys.modules[name] = stub
        stubs.append(name)
    path = list(sys.path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("apls.apls")
    except ImportError as exc:  # installed but unusable: not geoseg's failure
        pytest.skip(f"the reference APLS package does not import ({exc}); {INSTALL}")
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
        sys.path[:] = path


def to_networkx(graph: RoadGraph, first_id: int) -> Any:
    """The reference's input form: a MultiGraph with node x, y and edge geometry, length."""
    import networkx as nx

    g = nx.MultiGraph()
    for i, (x, y) in enumerate(graph.nodes.tolist()):
        g.add_node(first_id + i, x=x, y=y)
    for (u, v), line in zip(graph.edges.tolist(), graph.geometries, strict=True):
        g.add_edge(first_id + u, first_id + v, geometry=line, length=line.length)
    return g


def reference_apls(
    ref: Any,
    pred: RoadGraph,
    truth: RoadGraph,
    *,
    spacing: float = 50.0,
    snap: float = 4.0,
    min_path_length: float = MIN_PATH_LENGTH_M,
) -> tuple[float, float, float]:
    """(APLS, truth onto prediction, prediction onto truth) by the reference, same graphs.

    ``make_graphs`` with its default ``allow_renaming=False`` and the curvature filter off
    (``is_curved_eps=-1``: control points on every edge, as SpaceNet describes APLS).
    """
    gt, gp = to_networkx(truth, 0), to_networkx(pred, PRED_IDS)
    with contextlib.redirect_stdout(io.StringIO()):
        out = ref.make_graphs(
            gt,
            gp,
            linestring_delta=spacing,
            is_curved_eps=-1,
            max_snap_dist=snap,
            allow_renaming=False,
        )
        total, t2p, p2t = ref.compute_apls_metric(
            *out[6:10], out[4], out[5], min_path_length=min_path_length
        )
    return float(total), float(t2p), float(p2t)

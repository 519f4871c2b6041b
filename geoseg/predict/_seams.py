"""The seam score of a prediction: do tile borders show in the class map?

Neighbouring pixels disagree on their class at object edges, wherever those are. Where tiles
are stitched badly they also disagree along tile borders, which objects do not care about.
:class:`SeamScore` counts, over the finished class raster, how often two neighbouring
pixels (left-right and top-bottom pairs, both valid) have different classes

* on **tile-border lines**: the pair straddles a line where a tile of the plan starts or
  ends, or the middle of an overlap (where a crop-the-centre stitcher would cut), and
* everywhere else (**interior** pairs),

and reports both rates and their ratio (counted on every 8th row and column: rates, not
totals). A seamless map has a ratio near 1 (borders are not
special); a visible seam raises it (a hard seam on every border line gives ratios of 10 and
more on typical maps). It is written in the sidecar and printed by ``geoseg bench predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg.blocks import AxisPlan, BlockPlan
from geoseg.schema import IGNORE

__all__ = ["SeamScore", "border_lines"]

_SAMPLE = 8  # pairs are counted on every 8th row (column): the rates, at an eighth of the cost


def border_lines(axis: AxisPlan) -> npt.NDArray[np.bool_]:
    """``out[x]``: whether the pair of pixels (x - 1, x) straddles a tile-border line.

    Lines: each tile's start and end, and the middle of each overlap (inside the axis).
    """
    out = np.zeros(axis.length + 1, dtype=bool)
    starts = axis.starts
    for i, s in enumerate(starts):
        out[s] = True
        out[min(s + axis.size, axis.length)] = True
        if i + 1 < len(starts):
            nxt = starts[i + 1]
            end = min(s + axis.size, axis.length)
            if nxt < end:
                out[(nxt + end) // 2] = True
    out[0] = out[axis.length] = False  # the scene's own edges are not seams
    return out


@dataclass
class SeamScore:
    """Class disagreement of neighbouring pixels on tile-border lines and elsewhere.

    Feed it the class raster block by block (:meth:`add`); pairs that straddle two blocks
    are not counted (block edges are tile starts, so only some border pairs are left out).
    """

    plan: BlockPlan

    def __post_init__(self) -> None:
        self._cols = border_lines(self.plan.cols)
        self._rows = border_lines(self.plan.rows)
        self.counts = np.zeros((2, 2), dtype=np.int64)  # [border, interior] x [pairs, differ]

    def add(self, window: Window, classes: npt.NDArray[np.uint8]) -> None:
        """Count the pairs inside one block of the class raster."""
        r0, c0 = int(window.row_off), int(window.col_off)
        k = _SAMPLE
        # left-right pairs on every k-th row, top-bottom pairs on every k-th column
        rows, cols = classes[::k], classes[:, ::k]
        h_diff = rows[:, 1:] != rows[:, :-1]
        h_ok = (rows[:, 1:] != IGNORE) & (rows[:, :-1] != IGNORE)
        h_border = self._cols[c0 + 1 : c0 + classes.shape[1]][None, :]
        v_diff = cols[1:] != cols[:-1]
        v_ok = (cols[1:] != IGNORE) & (cols[:-1] != IGNORE)
        v_border = self._rows[r0 + 1 : r0 + classes.shape[0]][:, None]
        for diff, valid, border in ((h_diff, h_ok, h_border), (v_diff, v_ok, v_border)):
            on = valid & border
            n_on, n_valid = np.count_nonzero(on), np.count_nonzero(valid)
            d_on, d_valid = np.count_nonzero(diff & on), np.count_nonzero(diff & valid)
            self.counts[0] += (n_on, d_on)
            self.counts[1] += (n_valid - n_on, d_valid - d_on)

    def summary(self) -> dict[str, float | int | None]:
        """Rates of disagreement on border lines and inside tiles, and their ratio.

        ``ratio`` is None when either rate cannot be measured (no pair, or a uniform map).
        """
        (bn, bd), (inn, ind) = self.counts.tolist()
        border = bd / bn if bn else None
        interior = ind / inn if inn else None
        ratio = border / interior if border is not None and interior else None
        return {
            "border_disagreement": None if border is None else round(border, 6),
            "interior_disagreement": None if interior is None else round(interior, 6),
            "ratio": None if ratio is None else round(ratio, 4),
            "border_pairs": bn,
            "interior_pairs": inn,
        }

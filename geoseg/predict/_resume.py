"""The work folder of a scene: finished blocks and seams on disk, so a killed run resumes.

The driver persists every block result in ``OUTDIR/.{scene}.partial/`` (keyed by the
options, the model hash and the input files; another key starts afresh) and completes the
seams between blocks from the spilled sums as soon as all their contributors are done, in
a few threads. Entries are folders of ``.npy`` files renamed into place, so a killed run
never leaves a partial entry: finished blocks are not recomputed and the result is
byte-identical. Names: ``b_R_C`` a block's core (written last: it marks the block done),
``s_R_C`` its own seam sums, ``p_R_C_r_c`` the piece block ``(r, c)`` owes to it, and
``f_R_C`` its completed seams. A core or completed seam holds ``classes``, ``probs`` (when
asked) and ``extra`` (the uint8 probabilities of a model's extra outputs, when it has any).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.blend import decode, decode_extra, seam_sums
from geoseg.blocks import BlockPlan, Rect
from geoseg.grid import GeoBox
from geoseg.predict._block import BlockResult
from geoseg.raster import SceneSpec
from geoseg.schema import IGNORE

__all__ = ["WORK_VERSION", "SceneRun"]

logger = logging.getLogger(__name__)

WORK_VERSION = 2


def _save_arrays(path: Path, **arrays: npt.NDArray[Any]) -> None:
    """Write arrays as ``path/{name}.npy`` atomically (a temporary folder, then rename).

    A killed process never leaves a partial entry under the final name. Plain ``.npy``
    (no compression, no checksums) keeps the driver fast. (No fsync: the page cache
    survives the death of the process; a power cut may lose the last blocks.)
    """
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _load_arrays(
    path: Path, *, skip: str | tuple[str, ...] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The arrays saved by :func:`_save_arrays`, but those whose name starts with ``skip``."""
    return {
        p.stem: np.load(p, allow_pickle=False)
        for p in path.glob("*.npy")
        if skip is None or not p.stem.startswith(skip)
    }


def _bname(kind: str, *blocks: tuple[int, int]) -> str:
    return kind + "".join(f"_{r}_{c}" for r, c in blocks)


class SceneRun:
    """Driver-side state of one scene: plan, work folder, finished blocks and seams.

    Constructing one touches no file: :meth:`open` creates (or resumes) the work folder,
    once every scene has been checked, and :meth:`discard_if_empty` removes it again after
    a failure that left no finished block.
    """

    def __init__(
        self,
        index: int,
        spec: SceneSpec,
        *,
        scale: int = 1,
        geobox: GeoBox,
        plan: BlockPlan,
        key: str,
        paths: dict[str, Path],
        probabilities: bool,
        warnings: list[str],
        extra: int = 0,
    ) -> None:
        self.index = index
        self.spec = spec
        self.scale = scale
        self.geobox = geobox
        self.plan = plan
        self.key = key
        self.paths = paths
        self.work = paths["work"]
        self.probabilities = probabilities
        self.extra = extra  # the model's extra outputs (channels after the classes)
        self.warnings = warnings
        self.done: set[tuple[int, int]] = set()
        self.sealed: set[tuple[int, int]] = set()
        self._sealing: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self.stats = {
            "tiles": 0,
            "skipped": 0,
            "read_s": 0.0,
            "wait_s": 0.0,
            "device_s": 0.0,
            "block_s": 0.0,
            "persist_s": 0.0,
        }
        self.runtimes: set[tuple[str, str, int, float]] = set()  # as the blocks report them
        self.resumed = 0
        self._opened = False
        self._made_outdir = False

    def open(self) -> None:
        """Create the work folder, or resume the finished blocks of an earlier run.

        A work folder of other options, model or inputs (another key) is discarded.
        """
        self._opened = True
        self._made_outdir = not self.work.parent.exists()
        state = self.work / "state.json"
        if self.work.is_dir():
            try:
                old = json.loads(state.read_text()).get("key")
            except (OSError, ValueError):
                old = None
            if old != self.key:
                logger.warning(
                    "%s: partial results of an earlier run with other options, model or inputs; "
                    "starting afresh",
                    self.work,
                )
                shutil.rmtree(self.work)
        if not self.work.is_dir():
            self.work.mkdir(parents=True)
            with atomic_path(state) as tmp:
                tmp.write_text(json.dumps({"key": self.key, "version": WORK_VERSION}))
            return
        for b in self.plan.blocks:
            if (self.work / _bname("b", b)).exists():
                self.done.add(b)
        self.resumed = len(self.done)
        for b in sorted(self.done):
            if not self.plan.seam_rects(b) or (self.work / _bname("f", b)).exists():
                self.sealed.add(b)
                self._drop_pieces(b)
        for d in self._claim_seals(sorted(self.done - self.sealed)):
            self._seal(d)
            self.sealed.add(d)
        if self.resumed:
            logger.info(
                "%s: resuming, %d of %d blocks already done",
                self.spec.id,
                self.resumed,
                len(self.plan.blocks),
            )

    def discard_if_empty(self) -> None:
        """Remove the work folder if no block of this scene is finished (after a failure).

        Finished blocks (of this run or an earlier one) are kept: the same command resumes.
        An output folder that :meth:`open` created goes too if nothing else is in it (so
        discard the scenes in reverse order).
        """
        if self._opened and not self.done:
            shutil.rmtree(self.work, ignore_errors=True)
            if self._made_outdir:
                with contextlib.suppress(OSError):  # not empty: other outputs are in it
                    self.work.parent.rmdir()

    @property
    def todo(self) -> list[tuple[int, int]]:
        return [b for b in self.plan.blocks if b not in self.done]

    @property
    def complete(self) -> bool:
        with self._lock:
            return len(self.sealed) == len(self.plan.blocks)

    def persist(self, res: BlockResult) -> None:
        """Write a block's result to the work folder, then complete every seam it unblocks.

        Thread-safe: blocks are persisted by a pool of driver threads. Each block writes
        only its own files, the bookkeeping (done, sealed) happens under a lock, and a seam
        is completed by exactly one thread, once all of its contributors' files exist.
        """
        t0 = time.perf_counter()
        b = res.block
        with self._lock:  # its own seam complete already (its contributors done): seal it now
            now = (
                bool(res.seams)
                and b not in self._sealing
                and all(c in self.done for c in self.plan.contributors(b) if c != b)
            )
            if now:
                self._sealing.add(b)
        if now:  # from memory: its seam sums are never written
            self._seal(b, own=res.seams)
        self._write(res, own_seams=not now)
        with self._lock:
            self.done.add(b)
            self.stats["tiles"] += res.tiles
            self.stats["skipped"] += res.skipped
            self.stats["read_s"] += res.read_s
            self.stats["wait_s"] += res.wait_s
            self.stats["device_s"] += res.device_s
            self.runtimes.add(res.runtime)
            self.warnings.extend(w for w in res.warnings if w not in self.warnings)
            self.stats["block_s"] += res.seconds
            ready = self._claim_seals([b, *self.plan.dependents(b)])
        for d in ready:
            self._seal(d)
        with self._lock:
            self.stats["persist_s"] += time.perf_counter() - t0
            self.sealed.update(ready)
            if now:
                self.sealed.add(b)

    def _write(self, res: BlockResult, *, own_seams: bool) -> None:
        b = res.block
        if res.seams and own_seams:
            seams = _numbered((r, {"sums": s, "valid": v}) for r, s, v in res.seams)
            _save_arrays(self.work / _bname("s", b), **seams)
        for dest, rect, sums in res.pieces:
            _save_arrays(
                self.work / _bname("p", dest, b), rect=np.asarray(_rect_tuple(rect)), sums=sums
            )
        core: dict[str, npt.NDArray[Any]] = {"classes": res.classes}
        if res.probs is not None:
            core["probs"] = res.probs
        if res.extra is not None:
            core["extra"] = res.extra
        _save_arrays(self.work / _bname("b", b), **core)  # last: its existence marks the block done

    def _claim_seals(self, blocks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Blocks whose seams can be completed now, reserved for the caller (hold the lock).

        A block without seams is sealed as soon as it is done.
        """
        ready = []
        for d in blocks:
            if d in self.sealed or d in self._sealing or d not in self.done:
                continue
            if self.plan.seam_rects(d) and any(
                c not in self.done for c in self.plan.contributors(d)
            ):
                continue
            self._sealing.add(d)
            ready.append(d)
        return ready

    def _seal(
        self,
        d: tuple[int, int],
        own: Sequence[tuple[Rect, npt.NDArray[np.int32], npt.NDArray[np.bool_]]] | None = None,
    ) -> None:
        """Complete block ``d``'s seams from the spilled sums of its contributors.

        ``own``: ``d``'s own seam sums and validity when in memory (else read from its
        ``s_`` entry).
        """
        if not self.plan.seam_rects(d):
            return
        if own is None:
            saved = _entries(_load_arrays(self.work / _bname("s", d)), "sums", "valid")
            own = [(rect, sums, valid) for rect, (sums, valid) in saved]
        pieces = [(rect, sums) for rect, sums, _ in own]
        valids = [valid for _, _, valid in own]
        for c in self.plan.contributors(d):
            if c != d:
                p = _load_arrays(self.work / _bname("p", d, c))
                pieces.append((Rect(*(int(v) for v in p["rect"])), p["sums"]))
        done: list[tuple[Rect, dict[str, npt.NDArray[Any]]]] = []
        for (rect, sums), valid in zip(seam_sums(self.plan, d, pieces), valids, strict=True):
            cls, probs = decode(sums, valid, probabilities=self.probabilities, extra=self.extra)
            arrays = {"classes": cls}
            if probs is not None:
                arrays["probs"] = probs
            if self.extra:
                arrays["extra"] = decode_extra(sums, valid, extra=self.extra)
            done.append((rect, arrays))
        _save_arrays(self.work / _bname("f", d), **_numbered(done))
        self._drop_pieces(d)

    def _drop_pieces(self, d: tuple[int, int]) -> None:
        for c in self.plan.contributors(d):
            name = _bname("s", d) if c == d else _bname("p", d, c)
            shutil.rmtree(self.work / name, ignore_errors=True)

    def blocks(
        self, *, probs: bool = True
    ) -> Iterator[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]]:
        """Finished blocks with their seams applied, row-major (``probs``: with probabilities)."""
        skip = ("extra",) if probs else ("extra", "probs")
        for b, rect in self.plan.iter_rects():
            core = _load_arrays(self.work / _bname("b", b), skip=skip)
            classes = core["classes"]
            block_probs = core.get("probs")
            if self.plan.seam_rects(b):
                seam = _load_arrays(self.work / _bname("f", b), skip=skip)
                for srect, (seam_classes, seam_probs) in _entries(seam, "classes", "probs"):
                    sl = srect.slices(rect)
                    classes[sl] = seam_classes
                    if block_probs is not None:
                        block_probs[(slice(None), *sl)] = seam_probs
            yield Window(rect.col, rect.row, rect.width, rect.height), classes, block_probs

    def extra_blocks(
        self,
    ) -> Iterator[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
        """Finished blocks' extra outputs (E, h, w) with their seams applied, row-major.

        With each, its validity: where the class map has a class (as for probabilities).
        """
        for b, rect in self.plan.iter_rects():
            core = _load_arrays(self.work / _bname("b", b), skip="probs")
            classes, extra = core["classes"], core["extra"]
            if self.plan.seam_rects(b):
                seam = _load_arrays(self.work / _bname("f", b), skip="probs")
                for srect, (seam_classes, seam_extra) in _entries(seam, "classes", "extra"):
                    sl = srect.slices(rect)
                    classes[sl] = seam_classes
                    extra[(slice(None), *sl)] = seam_extra
            window = Window(rect.col, rect.row, rect.width, rect.height)
            yield window, extra, classes != IGNORE


def _rect_tuple(r: Rect) -> tuple[int, int, int, int]:
    return (r.row, r.col, r.height, r.width)


def _numbered(
    entries: Iterable[tuple[Rect, dict[str, npt.NDArray[Any]]]],
) -> dict[str, npt.NDArray[Any]]:
    """A list of rectangles with their arrays as one entry's arrays: ``rect{i}``, ``{name}{i}``."""
    out: dict[str, npt.NDArray[Any]] = {}
    for i, (rect, arrays) in enumerate(entries):
        out[f"rect{i}"] = np.asarray(_rect_tuple(rect))
        out.update({f"{name}{i}": a for name, a in arrays.items()})
    return out


def _entries(saved: dict[str, npt.NDArray[Any]], *names: str) -> list[tuple[Rect, list[Any]]]:
    """The rectangles of :func:`_numbered` arrays, each with its ``names`` (None if absent)."""
    out = []
    i = 0
    while f"rect{i}" in saved:
        rect = Rect(*(int(v) for v in saved[f"rect{i}"]))
        out.append((rect, [saved.get(f"{name}{i}") for name in names]))
        i += 1
    return out

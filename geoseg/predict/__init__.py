"""Whole-scene prediction: Dask-scheduled, batched, seamlessly blended, resumable.

How a scene is predicted:

1. **Plan** (driver, pure math): one global tile plan for the scene (tile size, overlap,
   edge tiles shifted inside) and a grid of output blocks whose boundaries sit on tile
   starts (:func:`geoseg.blocks.plan_blocks`). Each tile belongs to exactly one block, so no
   tile is ever computed twice, and each pixel always sees the same tiles whatever the
   block size.
2. **Block tasks** (Dask workers; tasks get paths, never open handles): a task opens the
   scene and reads what its tiles cover straight from the big files, as stored, in one
   windowed read (rows shared by overlapping tiles are read once; uint8 bands stay uint8),
   and sends it with its tiles to the process's model runner. Tiles without a single valid
   pixel are skipped.
3. **Model runner**: ONE per worker process and model hash (a per-process cache), on its
   device, fed by a queue that every task of the process shares. Everything per pixel
   happens on the device: normalisation, full batches of tiles cut from the rows (the last
   one padded to the same shape: a tile's output never depends on its batch), the model
   with test-time augmentation, softmax, and the exact integer blending of the quantised
   probabilities with integer window weights (:mod:`geoseg.blend`). Integer sums do not
   depend on the order of addition, so the output is bit-identical for any block size,
   worker count or resume. Only what is written comes back: uint8 classes (and
   probabilities), and the sums along the seams between blocks. On CUDA: copies on their
   own stream, pinned memory, blocking events, bf16 autocast, ``channels_last``,
   ``cudnn.benchmark`` and optionally ``torch.compile``. On a Dask cluster every worker is
   given one device (:func:`geoseg._dask.assign_devices`: its host's GPUs round-robin),
   and a run that would mix CPU and GPU workers is refused unless allowed.
4. **Driver**: receives block results as they complete (a bounded number in flight),
   persists them in a work folder ``OUTDIR/.{scene}.partial/`` (keyed by the options, the
   model hash and the input files) and completes the seams between blocks from the spilled
   sums, in a few threads so that it keeps up with many workers; once every block is done,
   it streams the blocks into Cloud-Optimized GeoTIFFs
   (:mod:`geoseg.raster.writers`) that are renamed into place only when complete. A run that was
   killed resumes: finished blocks are not recomputed and the result is byte-identical.

Without a Dask client, an in-process ``LocalCluster`` of ``workers`` threads is used: one
process, one model on the device, reads and blending in parallel with the model, and
memory bounded by the number of blocks in flight. With a client (``--scheduler
tcp://host:port``) blocks of all scenes spread over the cluster's workers; every worker
loads the model once; the driver assembles one raster per scene. Workers must see the
scene and checkpoint paths (a shared filesystem).

Where it lives: :mod:`~geoseg.predict._types` (options, report, output paths),
:mod:`~geoseg.predict._model` (the model and what tasks carry of it),
:mod:`~geoseg.predict._runner` (the per-process model runner),
:mod:`~geoseg.predict._device` (the per-pixel work on the device, and the copies),
:mod:`~geoseg.predict._block` (tile reader and block task),
:mod:`~geoseg.predict._resume` (the work folder), :mod:`~geoseg.predict._provenance` (work
key, tags, sidecar), :mod:`~geoseg.predict._seams` (the seam score) and
:mod:`~geoseg.predict._driver` (:func:`predict_scenes`).

Memory per block in flight is about ``(classes + 1) * 4`` bytes per block pixel for the sums
plus its area as read and normalised; it never depends on the scene size.
"""

from __future__ import annotations

from geoseg.predict._block import read_block_area
from geoseg.predict._driver import predict_scenes
from geoseg.predict._model import PredictModel
from geoseg.predict._types import PredictOptions, PredictReport, output_paths

__all__ = [
    "PredictModel",
    "PredictOptions",
    "PredictReport",
    "output_paths",
    "predict_scenes",
    "read_block_area",
]

"""What the host spends to predict, beside what reading the scene costs (``bench predict`` (d)).

:func:`host_cost` predicts the bench scene (image + DSM) with the 1x1 model and measures the
process's CPU time per scene megapixel (with the modules loaded, but the scene's ground
estimated afresh, as by a new run); :func:`read_floor` measures plain block-aligned
rasterio reads of the same bands, the floor any reader pays. :class:`GpuUtil` samples the
GPU's utilisation while a run goes.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from geoseg.bench.scene import rule_model
from geoseg.predict import PredictOptions, predict_scenes
from geoseg.raster import SceneSpec
from geoseg.raster.ground import clear_ground_cache
from geoseg.raster.spill import clear_spills

__all__ = ["GpuUtil", "HostCost", "host_cost", "read_floor"]


@dataclass(frozen=True)
class HostCost:
    """CPU time per scene megapixel of a prediction with the 1x1 model, and the read floor.

    Measured as process CPU time (user + system, every thread). On the CPU the device work
    (normalisation, model, softmax, blending, decoding) runs on the CPU too: the model
    thread's share (``device_ms_per_mpx``, with torch on one thread so that it is all in
    that thread) is what a GPU would take off the host, and ``host_ms_per_mpx`` is the rest.
    On CUDA everything the process spends is host time. A shared machine's noise moves one
    run by 10-20 %: the figures are the medians of ``runs`` predictions (and as many floor
    measurements), with the range of the host's.

    Attributes:
        total_ms_per_mpx: CPU-ms per scene Mpx of the whole prediction.
        device_ms_per_mpx: Of which the device work, when the device is the CPU (else 0).
        host_ms_per_mpx: ``total - device``: what the host spends.
        floor_ms_per_mpx: CPU-ms per scene Mpx of plain block-aligned rasterio reads of the
            same bands (image and DSM): the floor any reader pays.
        ratio: ``host / floor``.
        seconds: Wall time of a prediction.
        host_range: The lowest and highest ``host_ms_per_mpx`` of the runs.
        runs: Predictions measured.
    """

    total_ms_per_mpx: float
    device_ms_per_mpx: float
    host_ms_per_mpx: float
    floor_ms_per_mpx: float
    ratio: float
    seconds: float
    host_range: tuple[float, float] = (0.0, 0.0)
    runs: int = 1

    def summary(self) -> list[str]:
        """Human-readable lines."""
        lo, hi = self.host_range
        return [
            f"(d) host cost  : {self.host_ms_per_mpx:9.1f} CPU-ms per scene Mpx with the 1x1 "
            f"model = {self.ratio:.1f} x the read floor ({self.floor_ms_per_mpx:.1f})",
            f"                 (median of {self.runs} runs, range {lo:.1f}-{hi:.1f}; whole "
            f"process {self.total_ms_per_mpx:.1f}, of which device work on the CPU "
            f"{self.device_ms_per_mpx:.1f})",
        ]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def read_floor(spec: SceneSpec) -> float:
    """CPU-ms per scene Mpx of plain block-aligned reads of the scene's image and DSM."""
    import rasterio
    from rasterio.windows import Window

    c0, px = _cpu_seconds(), 0
    for path in (spec.image, spec.dsm):
        if path is None:
            continue
        with rasterio.open(path) as ds:
            step = ds.block_shapes[0][0]
            for r in range(0, ds.height, step):
                ds.read(window=Window(0, r, ds.width, min(step, ds.height - r)))
            px = ds.width * ds.height
    return (_cpu_seconds() - c0) * 1e3 / (px / 1e6)


def host_cost(
    spec: SceneSpec,
    root: Path,
    *,
    device: str,
    workers: int,
    tile_size: int,
    overlap: int,
    runs: int = 3,
) -> HostCost:
    """(d): CPU time per scene Mpx of predicting ``spec`` with the 1x1 model (image + nDSM).

    Each run is a new prediction: the scene's ground is estimated afresh, as by any new run
    (the modules are loaded already). The medians of ``runs`` runs and floors.
    """
    import torch

    floors, totals, devs, secs = [], [], [], []
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # the device work is then all in the model thread
    try:
        for _ in range(runs):
            floors.append(read_floor(spec))
            clear_ground_cache()
            clear_spills()
            out = Path(tempfile.mkdtemp(prefix="host-", dir=root))
            try:
                c0, t0 = _cpu_seconds(), time.perf_counter()
                (rep,) = predict_scenes(
                    [spec],
                    rule_model(),
                    out,
                    options=PredictOptions(
                        tile_size=tile_size, overlap=overlap, device=device, workers=workers
                    ),
                )
                secs.append(time.perf_counter() - t0)
                mpx = rep.megapixels
                totals.append((_cpu_seconds() - c0) * 1e3 / mpx)
                side = json.loads(rep.sidecar.read_text())
            finally:
                shutil.rmtree(out, ignore_errors=True)
            cpu = side["timings"]["device_cpu_s"] * 1e3 / mpx if device == "cpu" else 0.0
            devs.append(cpu)
    finally:
        torch.set_num_threads(threads)
    hosts = [t - d for t, d in zip(totals, devs, strict=True)]
    host, floor = statistics.median(hosts), statistics.median(floors)
    return HostCost(
        total_ms_per_mpx=statistics.median(totals),
        device_ms_per_mpx=statistics.median(devs),
        host_ms_per_mpx=host,
        floor_ms_per_mpx=floor,
        ratio=host / floor if floor > 0 else float("inf"),
        seconds=statistics.median(secs),
        host_range=(min(hosts), max(hosts)),
        runs=runs,
    )


class GpuUtil:
    """Samples the GPU's utilisation (NVML through torch) in a thread; None where unavailable."""

    def __init__(self, device: str) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if device.startswith("cuda"):
            import torch

            try:
                torch.cuda.utilization(device)
            except (ModuleNotFoundError, RuntimeError):  # no pynvml / NVML here
                return
            self._thread = threading.Thread(target=self._run, args=(device,), daemon=True)
            self._thread.start()

    def _run(self, device: str) -> None:
        import torch

        while not self._stop.wait(0.25):
            self.samples.append(float(torch.cuda.utilization(device)))

    def stop(self) -> float | None:
        """Stop sampling; the mean utilisation (%), or None where it could not be read."""
        self._stop.set()
        if self._thread is None:
            return None
        self._thread.join()
        return sum(self.samples) / len(self.samples) if self.samples else None

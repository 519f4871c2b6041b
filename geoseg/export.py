"""Export a checkpoint to ONNX: one model for QGIS Deepness and other runtimes.

:func:`export_onnx` writes ``MODEL.onnx`` and a JSON card beside it (``MODEL.json``):

- **The normalisation is inside the graph.** The graph takes ``x`` (N, bands, H, W) float32
  and computes ``band = x * input_scale`` and then the checkpoint's ``(band - mean) / std``
  before the network, so a runtime never needs geoseg's statistics. With the default
  ``input_scale`` 255, ``x`` is what QGIS Deepness feeds: the layer's uint8 pixels divided
  by 255. With ``input_scale`` 1, ``x`` is the raw band values (any dtype, as float32).
- **The outputs are probabilities.** ``probs`` (N, classes, H, W) is the softmax of the class
  logits, what Deepness expects of a multi-class ``Segmentor``. A model's extra outputs (the
  building ``contact`` channel) are left out unless asked for; then each is one more output
  of one sigmoid channel (Deepness reads a one-channel output as a binary class).
- **Deepness's metadata** (:func:`deepness_metadata`), with its documented key names and
  JSON values: ``model_type``, ``class_names``, ``resolution`` (cm/px), ``tile_size`` (the
  name Deepness reads; ``tiles_size``, the name its table documents, too), ``tiles_overlap``
  (percent), ``seg_thresh`` and ``seg_small_segment`` (0: off, as ``geoseg predict``), and an
  identity ``standardization_mean``/``standardization_std``: the graph normalises itself,
  so what Deepness applies after its fixed /255 changes nothing.

The input height and width are fixed at the tile size (Deepness sets its tile size from the
model's input shape); the batch is dynamic. Before anything is written the exported graph
is run in onnxruntime on a random uint8-valued chip and compared with torch (the softmax of
the checkpoint's model on the normalised chip): a difference above :data:`TOLERANCE` is an
error. The difference is recorded in the card.

``onnx`` and ``onnxruntime`` are optional dependencies (``pip install 'geoseg[export]'``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.checkpoint import Checkpoint, file_sha256, load_checkpoint
from geoseg.errors import GeosegError, OutputError
from geoseg.options import ExportOptions, resolve_overlap

__all__ = [
    "CARD_FORMAT",
    "DEEPNESS_KEYS",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "TOLERANCE",
    "ExportReport",
    "RawInputModel",
    "card_path",
    "deepness_metadata",
    "export_onnx",
    "overlap_percent",
    "reference_probs",
]

logger = logging.getLogger(__name__)

OPSET = 17
"""The ONNX opset the model is exported with (onnxruntime >= 1.12, Deepness's runtime)."""
INPUT_NAME = "x"
OUTPUT_NAME = "probs"
TOLERANCE = 1e-3
"""The largest absolute difference allowed between onnxruntime's and torch's probabilities.

A quarter of one step of geoseg's uint8 probability rasters (1/255). Float32 kernels differ
by about 1e-6 relative; near a tie between two classes that becomes a probability difference
of up to about 1e-6 times the logits' magnitude (measured: 2e-5 for an untrained
``fcn_resnet18``, 3e-4 for an untrained ``unet`` whose logits reach 600)."""
CARD_FORMAT = "geoseg-onnx-card"

DEEPNESS_KEYS = (
    "model_type",
    "class_names",
    "resolution",
    "tile_size",
    "tiles_size",
    "tiles_overlap",
    "standardization_mean",
    "standardization_std",
    "seg_thresh",
    "seg_small_segment",
)
"""The metadata keys written for QGIS Deepness (its documented names)."""

_ELEVATION = frozenset({"dsm", "ndsm"})
_INSTALL = "pip install 'geoseg[export]'"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        onnx: The ONNX model.
        card: The JSON card beside it.
        tile_size: The model's fixed input height and width, pixels.
        overlap: Tile overlap, pixels.
        tiles_overlap: The same, in percent of the tile (Deepness's ``tiles_overlap``).
        outputs: The graph's output names, in order.
        max_abs_diff: Largest difference of onnxruntime's probabilities from torch's.
        seconds: Wall time of the export.
    """

    onnx: Path
    card: Path
    tile_size: int
    overlap: int
    tiles_overlap: int
    outputs: tuple[str, ...]
    max_abs_diff: float
    seconds: float


class RawInputModel(torch.nn.Module):
    """A model that takes scaled band values and returns probabilities.

    ``forward(x)`` computes ``((x * input_scale) - mean) / std`` per band, the network, the
    softmax of the first ``num_classes`` channels and, for each of the next ``extra``
    channels, its sigmoid as a separate (N, 1, H, W) output.

    Args:
        module: The network (N, bands, H, W) -> logits (N, classes + extra outputs, H, W).
        mean: Per-band mean (of the band values, as in the checkpoint).
        std: Per-band standard deviation.
        input_scale: Band value = ``x * input_scale``.
        num_classes: Class channels (softmax).
        extra: Extra output channels to return after the probabilities (sigmoid each).
    """

    mean: torch.Tensor
    std: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_scale: float,
        num_classes: int,
        extra: int = 0,
    ) -> None:
        super().__init__()
        self.module = module
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))
        self.register_buffer("scale", torch.tensor(float(input_scale), dtype=torch.float32))
        self.num_classes = num_classes
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Probabilities (and extra outputs) of scaled band values ``x`` (N, bands, H, W)."""
        z = (x * self.scale - self.mean) / self.std
        logits = self.module(z)
        probs = torch.softmax(logits[:, : self.num_classes], dim=1)
        if not self.extra:
            return probs
        c = self.num_classes
        extras = [torch.sigmoid(logits[:, c + i : c + i + 1]) for i in range(self.extra)]
        return (probs, *extras)


def reference_probs(ckpt: Checkpoint, raw: np.ndarray) -> np.ndarray:
    """Torch's class probabilities of raw band values ``raw`` (N, bands, H, W): the reference.

    The checkpoint's model on ``(raw - mean) / std``, then the softmax of the class channels.
    """
    module = ckpt.build_model()
    mean = torch.tensor(ckpt.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(ckpt.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    with torch.inference_mode():
        logits = module((torch.from_numpy(raw.astype(np.float32)) - mean) / std)
        probs = torch.softmax(logits[:, : ckpt.num_classes].float(), dim=1)
    return probs.numpy()


def card_path(onnx_path: str | os.PathLike[str]) -> Path:
    """The JSON card of an exported model: ``MODEL.json`` beside ``MODEL.onnx``."""
    return Path(onnx_path).with_suffix(".json")


def deepness_metadata(
    ckpt: Checkpoint, *, tile_size: int, overlap: int, extra_outputs: bool = False
) -> dict[str, str]:
    """The ONNX metadata QGIS Deepness reads, each value JSON-encoded as Deepness parses it.

    ``class_names`` maps class index to name; with extra outputs it is a list of such
    mappings, one per graph output (Deepness's multi-output form). ``resolution`` is in
    cm/px, ``tiles_overlap`` in percent of the tile. The standardisation is the identity:
    the graph normalises its input itself.
    """
    classes = {str(i): name for i, name in enumerate(ckpt.schema.classes)}
    class_names: Any = classes
    if extra_outputs and ckpt.extra_outputs:
        class_names = [classes] + [{"0": name} for name in ckpt.extra_outputs]
    bands = len(ckpt.bands)
    values: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": class_names,
        "resolution": round(ckpt.gsd * 100.0, 6),
        "tile_size": tile_size,
        "tiles_size": tile_size,
        "tiles_overlap": overlap_percent(overlap, tile_size),
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1.0] * bands,
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
    }
    return {key: json.dumps(values[key]) for key in DEEPNESS_KEYS}


def overlap_percent(overlap: int, tile_size: int) -> int:
    """``overlap`` pixels as a whole percent of ``tile_size`` (Deepness's ``tiles_overlap``)."""
    return round(100.0 * overlap / tile_size)


def _require_runtime() -> None:
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise GeosegError(
            f"geoseg export needs the {' and '.join(missing)} package(s), which are not "
            f"installed; {_INSTALL}"
        )


def export_onnx(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
) -> ExportReport:
    """Export a geoseg checkpoint to ONNX with its JSON card (see the module docstring).

    Args:
        checkpoint: The ``.pt`` file ``geoseg train`` wrote.
        output: The ONNX file to write (``.onnx``); the card is written beside it
            (:func:`card_path`).
        options: Tile size, overlap, input scale, extra outputs, overwrite.

    Returns:
        What was written, and the measured difference from torch.

    Raises:
        CheckpointError: The checkpoint is missing, corrupt or unusable.
        OutputError: The output name does not end in ``.onnx`` or cannot be created.
        OutputExistsError: The model or its card exists and ``overwrite`` is false.
        GeosegError: onnx or onnxruntime is not installed, or the exported graph differs
            from torch by more than :data:`TOLERANCE`.
    """
    from geoseg._io import atomic_path, check_output

    opts = options or ExportOptions()
    start = time.perf_counter()
    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise OutputError(f"{out}: an ONNX model's name must end in .onnx; e.g. -o model.onnx")
    card = card_path(out)
    for path in (out, card):
        check_output(path, overwrite=opts.overwrite, kind="file")
    _require_runtime()
    ckpt = load_checkpoint(checkpoint)
    tile = opts.tile_size if opts.tile_size is not None else ckpt.tile_size
    overlap = resolve_overlap(tile, opts.overlap)
    extra = len(ckpt.extra_outputs) if opts.extra_outputs else 0
    outputs = (OUTPUT_NAME, *ckpt.extra_outputs[:extra])

    wrapper = RawInputModel(
        ckpt.build_model(),
        mean=ckpt.mean,
        std=ckpt.std,
        input_scale=opts.input_scale,
        num_classes=ckpt.num_classes,
        extra=extra,
    ).eval()
    data = _to_onnx(wrapper, bands=len(ckpt.bands), tile=tile, outputs=outputs)
    model = _with_metadata(data, ckpt, tile=tile, overlap=overlap, opts=opts)
    diff = _verify(model, ckpt, tile=tile, input_scale=opts.input_scale)
    logger.info("onnxruntime vs torch: max abs difference %.3g (tolerance %g)", diff, TOLERANCE)
    payload = model.SerializeToString()
    card_data = _card(
        ckpt,
        checkpoint=Path(checkpoint),
        onnx_name=out.name,
        onnx_bytes=payload,
        tile=tile,
        overlap=overlap,
        opts=opts,
        outputs=outputs,
        diff=diff,
    )
    with (
        atomic_path(out, overwrite=opts.overwrite, kind="file") as tmp_onnx,
        atomic_path(card, overwrite=opts.overwrite, kind="file") as tmp_card,
    ):
        tmp_onnx.write_bytes(payload)
        tmp_card.write_text(json.dumps(card_data, indent=2) + "\n")
    return ExportReport(
        onnx=out,
        card=card,
        tile_size=tile,
        overlap=overlap,
        tiles_overlap=overlap_percent(overlap, tile),
        outputs=outputs,
        max_abs_diff=diff,
        seconds=time.perf_counter() - start,
    )


def _to_onnx(wrapper: RawInputModel, *, bands: int, tile: int, outputs: tuple[str, ...]) -> bytes:
    """The ONNX bytes of ``wrapper`` (TorchScript exporter: no onnxscript needed)."""
    buf = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)}
    with warnings.catch_warnings():
        # the exporter's own deprecation notice, and the tracer's notes on shapes that are
        # constant here (the input size is fixed)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (torch.zeros((1, bands, tile, tile), dtype=torch.float32),),
            buf,  # type: ignore[arg-type]  # a file object is accepted
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    return buf.getvalue()


def _with_metadata(
    data: bytes, ckpt: Checkpoint, *, tile: int, overlap: int, opts: ExportOptions
) -> Any:
    """The ONNX model of ``data`` with Deepness's and geoseg's metadata, checked."""
    import onnx

    from geoseg import __version__

    model = onnx.load_from_string(data)
    model.producer_name = "geoseg"
    model.producer_version = __version__
    model.doc_string = (
        f"geoseg {ckpt.arch.get('name')} land-cover model; bands {', '.join(ckpt.bands)}; "
        f"input x = band value / {opts.input_scale:g}; output probabilities"
    )
    meta = deepness_metadata(
        ckpt, tile_size=tile, overlap=overlap, extra_outputs=opts.extra_outputs
    )
    meta.update(
        {
            "geoseg_version": json.dumps(__version__),
            "geoseg_architecture": json.dumps(str(ckpt.arch.get("name"))),
            "geoseg_bands": json.dumps(list(ckpt.bands)),
            "geoseg_input_scale": json.dumps(float(opts.input_scale)),
            "geoseg_gsd_m": json.dumps(float(ckpt.gsd)),
        }
    )
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    # Declare the outputs' static shapes: the tracer leaves the padding crop's symbolic, and
    # Deepness reads the class count from the output shape.
    for i, out in enumerate(model.graph.output):
        dims = out.type.tensor_type.shape.dim
        for dim, size in zip(
            dims[1:], (ckpt.num_classes if i == 0 else 1, tile, tile), strict=True
        ):
            dim.Clear()
            dim.dim_value = size
    onnx.checker.check_model(model)
    return model


def _verify(model: Any, ckpt: Checkpoint, *, tile: int, input_scale: float) -> float:
    """Max abs difference of onnxruntime's probabilities from torch's on a random chip.

    Raises:
        GeosegError: The difference is above :data:`TOLERANCE` (a bug: the graph is not
            the model).
    """
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(1, len(ckpt.bands), tile, tile)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: raw / np.float32(input_scale)})[0]
    diff = float(np.max(np.abs(got - reference_probs(ckpt, raw))))
    if not diff <= TOLERANCE:
        raise GeosegError(
            f"the exported ONNX graph differs from the torch model by {diff:.3g} (more than "
            f"{TOLERANCE:g}) on a test chip; this is a bug in geoseg export, please report it"
        )
    return diff


def _card(
    ckpt: Checkpoint,
    *,
    checkpoint: Path,
    onnx_name: str,
    onnx_bytes: bytes,
    tile: int,
    overlap: int,
    opts: ExportOptions,
    outputs: tuple[str, ...],
    diff: float,
) -> dict[str, Any]:
    """The JSON card: how to feed the model and what comes out."""
    import hashlib

    scale = float(opts.input_scale)
    deepness = scale == 255.0
    meta = deepness_metadata(
        ckpt, tile_size=tile, overlap=overlap, extra_outputs=opts.extra_outputs
    )
    notes = [
        f"Feed x = band value / {scale:g} as float32, bands in the order listed; the graph "
        "applies geoseg's normalisation (mean, std) itself.",
        "QGIS Deepness: give the input layer these bands in this order (Deepness feeds "
        "uint8 pixels / 255); its standardization metadata is the identity."
        if deepness
        else "Other runtimes: feed the raw band values (any dtype, as float32).",
        "Pixels outside the scene: geoseg predict feeds each band's mean (normalised 0); "
        "Deepness pads with 0.",
    ]
    if any(b in _ELEVATION for b in ckpt.bands):
        notes.append(
            "Elevation bands (dsm/ndsm) are in metres above ground and must be bands of the "
            "input layer in the listed order; as 8-bit values for Deepness (1 m steps, 0..255)."
        )
    extras = [
        {
            "name": name,
            "shape": ["batch", 1, tile, tile],
            "activation": "sigmoid",
            "meaning": f"probability of {name}",
        }
        for name in outputs[1:]
    ]
    return {
        "format": CARD_FORMAT,
        "format_version": 1,
        "model": onnx_name,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "opset": OPSET,
        "architecture": str(ckpt.arch.get("name")),
        "checkpoint": {"file": checkpoint.name, "sha256": file_sha256(checkpoint)},
        "geoseg_version": ckpt.geoseg_version,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["batch", len(ckpt.bands), tile, tile],
            "input_scale": scale,
            "band_value": f"x * {scale:g}",
            "pixel_dtype": "uint8" if deepness else "any",
            "pixel_range": [0, 255] if deepness else None,
            "bands": [
                {"index": i, "name": b, "mean": float(m), "std": float(s)}
                for i, (b, m, s) in enumerate(zip(ckpt.bands, ckpt.mean, ckpt.std, strict=True))
            ],
        },
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "shape": ["batch", ckpt.num_classes, tile, tile],
                "activation": "softmax",
                "classes": list(ckpt.schema.classes),
            },
            *extras,
        ],
        "extra_outputs_left_out": [n for n in ckpt.extra_outputs if n not in outputs],
        "gsd_m": float(ckpt.gsd),
        "resolution_cm_per_px": json.loads(meta["resolution"]),
        "tile_size": tile,
        "overlap_px": overlap,
        "schema": ckpt.schema.to_dict(),
        "deepness_metadata": {k: json.loads(v) for k, v in meta.items()},
        "verification": {
            "runtime": "onnxruntime (CPU)",
            "chip": "random integer band values 0..255, seed 0",
            "max_abs_diff_probs": diff,
            "tolerance": TOLERANCE,
        },
        "notes": notes,
    }

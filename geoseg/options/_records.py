"""The option records of the commands: tile, predict, vectorize, evaluate.

See :mod:`geoseg.options` for how they are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import ConfigError
from geoseg.options._spec import (
    DEVICE_PATTERN,
    DEVICE_VALUES,
    TTA,
    BlendKind,
    ChipCompression,
    Device,
    Precision,
    VectorFormat,
    check_overlap,
    default_overlap,
    default_workers,
    option,
    validate_record,
)

__all__ = [
    "EvaluateOptions",
    "ExportOptions",
    "PredictOptions",
    "TileOptions",
    "VectorizeOptions",
]


# -- the records ---------------------------------------------------------------------------

_TILE_HELP = "Tile edge in pixels."


@dataclass(frozen=True)
class TileOptions:
    """How chips are cut (``geoseg tile``).

    Attributes:
        size: Chip edge in pixels.
        overlap: Pixels shared by neighbouring chips; None means a quarter of ``size``.
        min_valid: Chips whose valid fraction is below this are skipped.
        bands: Bands written, in order; None means every scene band but the absolute DSM.
        compress: GeoTIFF compression of the chips: ``deflate`` (small), ``zstd``, ``lzw`` or
            ``none`` (about 4 x larger, read about 2 x faster: for a GPU whose loader cannot
            keep up).
        footprints: Building footprints (GeoPackage, GeoJSON, GeoParquet...; reprojected to
            each scene's CRS): each chip also gets a ``contact`` target band, 1 where a pixel
            lies within ``contact_width`` of two or more different footprints. None: no
            contact target.
        footprints_layer: The layer of ``footprints`` to read; None takes a layer named
            ``buildings``, else the file's only layer.
        contact_width: Distance to two footprints (metres) within which a pixel is contact;
            the band is about twice as wide across a shared wall, and never under one pixel
            on either side of it.
    """

    size: int = option(
        512, _TILE_HELP, minimum=16, flags=("--size", "--tile-size"), aliases=("tile_size",)
    )
    overlap: int | None = option(
        None,
        "Pixels shared by neighbouring tiles.",
        minimum=0,
        show_default="a quarter of the tile size (128 for 512)",
    )
    min_valid: float = option(
        0.5, "Skip chips whose valid fraction is below this.", minimum=0.0, maximum=1.0
    )
    bands: tuple[str, ...] | None = option(
        None, "Bands to use, in order (default: every scene band but the absolute dsm)."
    )
    compress: ChipCompression = option(
        "deflate",
        "Chip compression; none reads about 2x faster (for a GPU whose loader lags) but "
        "takes about 4x the disk.",
    )
    footprints: Path | None = option(
        None,
        "Building footprints (GeoPackage, GeoJSON, GeoParquet): adds a contact target "
        "(pixels near two different buildings) to every chip.",
    )
    footprints_layer: str | None = option(
        None,
        "Layer of --footprints to read.",
        show_default="'buildings', else the only layer",
    )
    contact_width: float = option(
        1.0,
        "Pixels within this many metres of two different footprints are contact "
        "(at least one pixel).",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        validate_record(self)
        check_overlap(self.size, self.chip_overlap)
        if self.contact_width <= 0:
            raise ConfigError(
                f"contact_width={self.contact_width!r}: must be > 0 metres (e.g. 1.0)"
            )
        if self.footprints is not None and not isinstance(self.footprints, Path):
            object.__setattr__(self, "footprints", Path(self.footprints))

    @property
    def chip_overlap(self) -> int:
        """The overlap in pixels, the default resolved."""
        return default_overlap(self.size) if self.overlap is None else self.overlap


@dataclass(frozen=True)
class PredictOptions:
    """How scenes are predicted (``geoseg predict``, the ``predict`` step of a job).

    Tile size and overlap are in the model's pixels (the checkpoint's GSD); the sidecar
    records both that and the scene's pixels.

    Attributes:
        tile_size: Tile edge; None means the checkpoint's tile size.
        overlap: Pixels shared by neighbouring tiles (blended); None means a quarter of
            the tile size.
        batch_size: Tiles per model call; None means 32 on CUDA, 4 on the CPU.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` (the current GPU) or
            ``cuda:N`` (GPU ``N``). On a Dask cluster, ``cuda`` and ``auto`` spread the
            workers of each machine over its GPUs and ``cuda:N`` puts every worker on its
            GPU ``N``.
        precision: ``auto`` (bf16 on CUDA, fp32 on the CPU), ``bf16`` or ``fp32``.
        compile: ``torch.compile`` the model before predicting (CUDA); the warm-up is
            timed and reported; where unsupported, a warning and the eager model.
        tta: Test-time augmentation: ``none``, ``flip`` (4 flips) or ``d4`` (8 dihedral).
        probabilities: Also write ``{scene}_probs.tif``.
        blend: Weight window: ``hann``, ``spline`` or ``mean``.
        block_size: Output block edge in pixels (rounded to whole tile strides); bounds
            memory, never changes the result.
        workers: Threads of the local scheduler (ignored with a Dask client).
        allow_mixed_devices: Let a Dask cluster of CPU and GPU workers predict one run
            with ``device=auto`` (their outputs differ slightly); else refused.
        overwrite: Replace existing outputs.
        creation_options: Extra GDAL COG creation options ``(KEY, VALUE)``.
    """

    tile_size: int | None = option(
        None,
        _TILE_HELP,
        minimum=16,
        flags=("--tile-size", "--size"),
        aliases=("size",),
        show_default="the checkpoint's",
    )
    overlap: int | None = option(
        None,
        "Pixels shared by neighbouring tiles (blended).",
        minimum=0,
        show_default="a quarter of the tile size (128 for 512)",
    )
    batch_size: int | None = option(
        None, "Tiles per model call.", minimum=1, show_default="32 on cuda, 4 on cpu"
    )
    device: Device = option(
        "auto",
        "Compute device; auto picks cuda when available, cuda:N picks GPU N.",
        pattern=DEVICE_PATTERN,
        values=DEVICE_VALUES,
    )
    precision: Precision = option("auto", "Model precision; auto is bf16 on cuda, fp32 on cpu.")
    compile: bool = option(
        False,
        "torch.compile the model before predicting (CUDA; the warm-up is timed and reported; "
        "falls back with a warning where unsupported).",
    )
    tta: TTA = option("none", "Test-time augmentation: 4 flips or 8 dihedral transforms, averaged.")
    probabilities: bool = option(False, "Also write per-class probabilities (uint8).")
    blend: BlendKind = option("hann", "Weight window for blending overlapping tiles.")
    block_size: int = option(
        2048, "Output block edge; bounds memory, never changes the result.", minimum=16
    )
    workers: int = option(
        default_workers,
        "Parallel worker processes or threads.",
        minimum=1,
        show_default="min(8, CPU count)",
        job=False,
    )
    allow_mixed_devices: bool = option(
        False,
        "Let a Dask cluster mix CPU and GPU workers in one scene (their outputs differ slightly).",
    )
    overwrite: bool = option(False, "Replace existing outputs.", job=False)
    creation_options: tuple[tuple[str, str], ...] = option(
        (),
        "GDAL creation option KEY=VAL for raster outputs (repeatable).",
        flags=("--co",),
        key="co",
    )

    def __post_init__(self) -> None:
        validate_record(self)
        if self.tile_size is not None and self.overlap is not None:
            check_overlap(self.tile_size, self.overlap)


@dataclass(frozen=True)
class VectorizeOptions:
    """How a class raster is vectorized (``geoseg vectorize``, the ``vectorize`` step).

    Attributes:
        classes: What to vectorize: ``building``, ``road`` (the schema's road class) or any
            class name of the schema. Layers are ``buildings``, ``roads`` and the class
            name otherwise.
        probabilities: Optional uint8 probability raster on the same grid (band ``k + 1``
            = class ``k``, 0..255); adds ``mean_prob`` (0..1). In a job file a boolean:
            use the scene's predicted probabilities.
        min_area: Drop polygons smaller than this, m².
        min_building_area: Drop buildings smaller than this, m² (beside ``min_area``): no
            real building is under 1 m², and single-pixel fragments of the class map do
            not reach the analyst at any pixel size up to 1 m (0 keeps every one).
        hole_area: Fill holes smaller than this, m².
        simplify: Douglas-Peucker tolerance, m, applied per shared border arc so that
            neighbouring polygons keep sharing their borders (0: none).
        regularize: Rectilinear building outlines (``building`` layer only); attached
            buildings are regularized together and keep one common wall.
        dsm: A DSM or nDSM on the raster's grid: touching buildings are split where their
            roofs differ in height by ``height_step`` (in a job: the scene's DSM, when
            ``split_buildings`` is on).
        contact: A contact probability raster (``{scene}_contact.tif`` from a model with a
            contact output) on the grid: touching buildings are split along it (in a job:
            the scene's, when ``split_buildings`` is on and the model has one).
        height_step: Roof height step (m) that separates two buildings.
        contact_threshold: Contact probability (0..1) above which pixels are a border.
        split_buildings: In a job, split touching buildings with the scene's DSM and
            contact raster (``dsm``/``contact`` on the command line).
        centerlines: Also write road centre-lines (layer ``road_centerlines``).
        spur_length: Centre-line dead ends shorter than this (m) are pruned; default
            40 pixels.
        format: ``gpkg`` (one GeoPackage) or ``parquet`` (a directory, one GeoParquet
            file per layer).
        block_size: Block edge, pixels.
        workers: Worker processes reading, polygonizing and cleaning blocks (1: all in
            this process). Scripts that use more than one must guard their entry point
            with ``if __name__ == "__main__":`` (worker processes are spawned).
        schema: Class schema used when the raster has no ``GEOSEG_SCHEMA`` tag (built-in
            name or YAML/JSON file).
        overwrite: Replace an existing output.
    """

    classes: tuple[str, ...] = option(
        ("building", "road"),
        "Comma-separated: building, road (the schema's road class) or class names.",
    )
    probabilities: Path | None = option(
        None, "uint8 probability raster on the same grid; adds mean_prob.", job=False
    )
    min_area: float = option(0.0, "Drop polygons under this many m².", minimum=0.0)
    min_building_area: float = option(
        1.0, "Drop buildings under this many m² (0: keep every one).", minimum=0.0
    )
    hole_area: float = option(0.0, "Fill holes under this many m².", minimum=0.0)
    simplify: float = option(
        0.0, "Simplification tolerance in m; shared borders stay shared.", minimum=0.0
    )
    regularize: bool = option(
        False, "Rectilinear building outlines; attached buildings keep one common wall."
    )
    dsm: Path | None = option(
        None, "DSM/nDSM on the same grid: split touching buildings at roof steps.", job=False
    )
    contact: Path | None = option(
        None, "Contact probability raster on the same grid: split buildings along it.", job=False
    )
    height_step: float = option(
        1.5, "Roof height step (m) that separates two touching buildings.", minimum=0.01
    )
    contact_threshold: float = option(
        0.5, "Contact probability above which pixels separate buildings.", minimum=0.0, maximum=1.0
    )
    split_buildings: bool = option(
        False, "Split touching buildings with the scene's DSM and contact raster.", cli=False
    )
    centerlines: bool = option(False, "Add a road_centerlines layer.")
    spur_length: float | None = option(
        None,
        "Prune centre-line dead ends shorter than this (m); default 40 pixels.",
        minimum=0.0,
    )
    format: VectorFormat = option(
        "gpkg", "GeoPackage, or a directory of GeoParquet files (one per layer)."
    )
    block_size: int = option(2048, "Block edge in pixels (results do not depend on it).", minimum=4)
    workers: int = option(
        1,
        "Worker processes that polygonize blocks (1: all in this process; spawned "
        "processes need an `if __name__ == '__main__':` guard in scripts).",
        minimum=1,
    )
    schema: str = option(
        "potsdam",
        "Class schema if the raster has no GEOSEG_SCHEMA tag (name or YAML/JSON file).",
        job=False,
    )
    overwrite: bool = option(False, "Replace existing outputs.", job=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("vectorize: no classes requested; pass e.g. building,road")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"vectorize: classes {self.classes!r} repeat a name")
        validate_record(self, prefix="vectorize: ")


@dataclass(frozen=True)
class EvaluateOptions:
    """How a class raster is scored (``geoseg evaluate``, the ``evaluate`` step).

    Attributes:
        eroded: Ignore truth pixels within this many pixels of a class boundary.
        ignore_class: Classes left out of mIoU and mean F1.
        block_size: Pixels per block edge.
        min_miou: Fail (exit 1) when mIoU is below this.
        road_buffer, road_snap, road_spacing, road_max_pairs: ``evaluate --roads`` only
            (:mod:`geoseg.evaluate.roads`; not in job files, whose evaluate step scores
            ``roads`` truth with the defaults).
    """

    eroded: int = option(
        0,
        "Ignore truth pixels within PX px of a class boundary (ISPRS uses 3).",
        minimum=0,
    )
    ignore_class: tuple[str, ...] = option(
        (),
        "Leave a class out of mIoU and mean F1 (repeatable), e.g. clutter.",
        flags=("--ignore-class",),
        repeat=True,
    )
    block_size: int = option(
        1024, "Pixels per block edge; memory grows with its square.", minimum=1
    )
    min_miou: float | None = option(
        None, "Exit 1 when mIoU (a fraction, 0..1) is below X.", minimum=0.0, maximum=1.0
    )
    road_buffer: float = option(
        2.0, "Roads: precision/recall buffer, m.", minimum=0.0, flags=("--buffer",), job=False
    )
    road_snap: float = option(
        4.0, "Roads: APLS snap distance, m.", minimum=0.0, flags=("--snap",), job=False
    )
    road_spacing: float = option(
        50.0, "Roads: APLS control spacing, m.", minimum=1, flags=("--control-spacing",), job=False
    )
    road_max_pairs: int = option(
        1_000_000,
        "Roads: most APLS routes per direction (then sampled).",
        minimum=1,
        flags=("--max-pairs",),
        job=False,
    )

    def __post_init__(self) -> None:
        validate_record(self)


@dataclass(frozen=True)
class ExportOptions:
    """How a checkpoint is exported to ONNX (``geoseg export``).

    Attributes:
        tile_size: The model input's fixed height and width (QGIS Deepness tiles with it);
            None means the checkpoint's tile size.
        overlap: Pixels shared by neighbouring tiles, written as Deepness's
            ``tiles_overlap`` percent; None means a quarter of the tile size.
        input_scale: What the graph multiplies its input by to get the band values the
            model was trained on: 255 for Deepness (which feeds uint8 pixels divided by
            255), 1 for runtimes that feed raw band values.
        extra_outputs: Also export the model's extra outputs (e.g. ``contact``) as more
            graph outputs, one sigmoid channel each; else the class probabilities only.
        overwrite: Replace an existing model and card.
    """

    tile_size: int | None = option(
        None,
        "Input height and width of the exported model (fixed).",
        minimum=16,
        show_default="the checkpoint's",
    )
    overlap: int | None = option(
        None,
        "Tile overlap in pixels, written as Deepness's tiles_overlap percent.",
        minimum=0,
        show_default="a quarter of the tile size",
    )
    input_scale: float = option(
        255.0,
        "The graph multiplies its input by this: 255 for Deepness (uint8/255), 1 for raw "
        "band values.",
        minimum=1e-6,
    )
    extra_outputs: bool = option(
        False, "Also export extra outputs (e.g. contact) as more sigmoid outputs."
    )
    overwrite: bool = option(False, "Replace existing outputs.", job=False)

    def __post_init__(self) -> None:
        validate_record(self, prefix="export: ")
        if self.tile_size is not None and self.overlap is not None:
            check_overlap(self.tile_size, self.overlap)

"""The toolbox algorithms: geoseg predict, vectorize and run, each a geoseg command line.

Each algorithm turns its parameters into the same command line a user would type (the
options, their names and defaults from ``options.json``, i.e. from geoseg's own records),
logs it for copying, runs it in a subprocess with progress and cancellation, and loads the
outputs with their styles (the ``.qml`` beside a class map, the styles in a GeoPackage).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsDataProvider,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsVectorLayer,
)

from .command import CanceledError, command_line, executable, load_spec, option_args, run_command

# The options shown up front; the others sit under "Advanced parameters".
_MAIN = {"tile_size", "overlap", "device", "tta", "probabilities", "classes", "min_area"}
_MAIN |= {"simplify", "regularize", "force", "workers"}
_CLASSES_LINE = re.compile(r"^(.+_classes\.tif): ")


class StyledLoader(QgsProcessingLayerPostProcessorInterface):
    """Loads the layer's own style: the ``.qml`` beside a raster, the style in a GeoPackage."""

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        layer.loadDefaultStyle()
        layer.triggerRepaint()


_LOADERS: list[StyledLoader] = []  # QGIS keeps no Python reference to a post-processor


def _load_styled(context: Any, path: str, name: str, output: str) -> None:
    details = QgsProcessingContext.LayerDetails(name, context.project(), output)
    loader = StyledLoader()
    _LOADERS.append(loader)
    details.setPostProcessor(loader)
    context.addLayerToLoadOnCompletion(path, details)


def _title(name: str) -> str:
    return name.replace("_", " ").capitalize()


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """One geoseg command: its options as parameters, a subprocess to run it."""

    command = ""
    label = ""
    about = ""
    skip: frozenset[str] = frozenset()
    """Options of the command this algorithm sets itself (or does not offer)."""

    def __init__(self) -> None:
        super().__init__()
        self.executable_setting = ""

    # -- identity -------------------------------------------------------------------------

    def name(self) -> str:
        return self.command

    def displayName(self) -> str:
        return self.label

    def group(self) -> str:
        return "geoseg"

    def groupId(self) -> str:
        return "geoseg"

    def shortHelpString(self) -> str:
        return (
            f"{self.about}\n\nRuns `geoseg {self.command}` in a subprocess; the exact command "
            "line is in the log, to copy and run in a shell."
        )

    def createInstance(self) -> GeosegAlgorithm:
        algorithm = type(self)()
        algorithm.executable_setting = self.executable_setting
        return algorithm

    # -- parameters -----------------------------------------------------------------------

    def options(self) -> list[dict[str, Any]]:
        """This command's options from ``options.json``, less those it sets itself."""
        return [e for e in load_spec()[self.command] if e["name"] not in self.skip]

    def add_inputs(self) -> None:
        """The inputs and outputs particular to the command."""

    def initAlgorithm(self, config: Any = None) -> None:
        self.add_inputs()
        for e in self.options():
            param = _parameter(e)
            param.setHelp(e["help"])
            if e["name"] not in _MAIN:
                param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputString("COMMAND", "geoseg command line"))

    def option_values(self, parameters: dict[str, Any], context: Any) -> dict[str, Any]:
        """Option name -> the value given (None where not set)."""
        out: dict[str, Any] = {}
        for e in self.options():
            key = e["name"].upper()
            if parameters.get(key) is None:
                continue
            kind = e["kind"]
            if kind == "bool":
                out[e["name"]] = self.parameterAsBoolean(parameters, key, context)
            elif kind == "choice":
                out[e["name"]] = e["choices"][self.parameterAsEnum(parameters, key, context)]
            elif kind == "int":
                out[e["name"]] = self.parameterAsInt(parameters, key, context)
            elif kind == "float":
                out[e["name"]] = self.parameterAsDouble(parameters, key, context)
            elif kind == "file":
                out[e["name"]] = self.parameterAsFile(parameters, key, context) or None
            elif kind == "multi":
                out[e["name"]] = self.parameterAsString(parameters, key, context).split() or None
            else:
                out[e["name"]] = self.parameterAsString(parameters, key, context) or None
        return out

    # -- running --------------------------------------------------------------------------

    def arguments(self, parameters: dict[str, Any], context: Any) -> list[str]:
        """The command's arguments before its options (inputs, model, outputs)."""
        return []

    def execute(self, argv: list[str], feedback: Any) -> list[str]:
        """Run ``argv``, logging it first; the lines it printed on standard output."""
        feedback.pushCommandInfo(command_line(argv))
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            feedback.pushConsoleInfo(line)

        try:
            code = run_command(
                argv,
                on_line=on_line,
                on_progress=feedback.setProgress,
                is_canceled=feedback.isCanceled,
            )
        except CanceledError as exc:
            raise QgsProcessingException(str(exc)) from None
        if code != 0:
            tail = "\n".join(lines[-5:])
            raise QgsProcessingException(f"geoseg {self.command} failed (exit {code}):\n{tail}")
        return lines

    def base_command(self) -> list[str]:
        """The geoseg executable and this command's name."""
        try:
            return [*executable(self.executable_setting), self.command]
        except FileNotFoundError as exc:
            raise QgsProcessingException(str(exc)) from None


def _parameter(e: dict[str, Any]) -> Any:
    """A Processing parameter for one option of ``options.json``."""
    key, title, kind, default = e["name"].upper(), _title(e["name"]), e["kind"], e["default"]
    if kind == "bool":
        return QgsProcessingParameterBoolean(key, title, defaultValue=bool(default))
    if kind == "choice":
        return QgsProcessingParameterEnum(
            key, title, options=e["choices"], defaultValue=e["choices"].index(default)
        )
    if kind in ("int", "float"):
        number = (
            QgsProcessingParameterNumber.Integer
            if kind == "int"
            else (QgsProcessingParameterNumber.Double)
        )
        param = QgsProcessingParameterNumber(
            key, title, type=number, defaultValue=default, optional=default is None
        )
        if e.get("minimum") is not None:
            param.setMinimum(e["minimum"])
        if e.get("maximum") is not None:
            param.setMaximum(e["maximum"])
        return param
    if kind == "file":
        return QgsProcessingParameterFile(key, title, optional=True)
    if kind == "multi":
        default = " ".join(default or ())
    return QgsProcessingParameterString(key, title, defaultValue=default, optional=True)


class PredictAlgorithm(GeosegAlgorithm):
    """``geoseg predict`` on one image (with its DSM or nDSM) and a checkpoint."""

    command = "predict"
    label = "Predict land cover"
    about = (
        "A land-cover class map (Cloud-Optimized GeoTIFF, styled) of an image, from a "
        "checkpoint written by geoseg train. Bands are mapped by name onto the model's."
    )

    def add_inputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("IMAGE", "Image"))
        self.addParameter(QgsProcessingParameterRasterLayer("DSM", "DSM", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("NDSM", "nDSM", optional=True))
        band_names = QgsProcessingParameterString(
            "BAND_NAMES", "Band names (comma-separated, in file order)", optional=True
        )
        band_names.setFlags(band_names.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(band_names)
        self.addParameter(
            QgsProcessingParameterFile("MODEL", "Model checkpoint (.pt)", extension="pt")
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputRasterLayer("CLASSES", "Class map"))
        self.addOutput(QgsProcessingOutputRasterLayer("PROBABILITIES", "Probabilities"))

    def arguments(self, parameters: dict[str, Any], context: Any) -> list[str]:
        args = ["--image", self.parameterAsRasterLayer(parameters, "IMAGE", context).source()]
        for key in ("DSM", "NDSM"):
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is not None:
                args += [f"--{key.lower()}", layer.source()]
        bands = self.parameterAsString(parameters, "BAND_NAMES", context)
        if bands:
            args += ["--band-names", bands]
        args += ["-m", self.parameterAsFile(parameters, "MODEL", context)]
        args += ["-o", self.parameterAsString(parameters, "OUTPUT", context)]
        return args

    def processAlgorithm(
        self, parameters: dict[str, Any], context: Any, feedback: Any
    ) -> dict[str, Any]:
        argv = self.base_command() + self.arguments(parameters, context)
        argv += option_args(self.options(), self.option_values(parameters, context))
        lines = self.execute(argv, feedback)
        found = [m[1] for m in map(_CLASSES_LINE.match, lines) if m is not None]
        if not found:
            raise QgsProcessingException("geoseg predict wrote no class map:\n" + "\n".join(lines))
        classes = found[0]
        probs = classes[: -len("_classes.tif")] + "_probs.tif"
        _load_styled(context, classes, Path(classes).stem, "CLASSES")
        out = {
            "OUTPUT": self.parameterAsString(parameters, "OUTPUT", context),
            "CLASSES": classes,
            "PROBABILITIES": None,
            "COMMAND": command_line(argv),
        }
        if Path(probs).is_file():
            _load_styled(context, probs, Path(probs).stem, "PROBABILITIES")
            out["PROBABILITIES"] = probs
        return out


class VectorizeAlgorithm(GeosegAlgorithm):
    """``geoseg vectorize``: a class map to building and road polygons in a GeoPackage."""

    command = "vectorize"
    label = "Vectorize class map"
    about = (
        "Building and road polygons (and road centre-lines) of a geoseg class map, in a "
        "GeoPackage whose layers carry their QGIS styles."
    )
    skip = frozenset({"format"})  # the output here is a GeoPackage

    def add_inputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class map"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT", "Output GeoPackage", fileFilter="GeoPackage (*.gpkg)"
            )
        )

    def arguments(self, parameters: dict[str, Any], context: Any) -> list[str]:
        source = self.parameterAsRasterLayer(parameters, "INPUT", context).source()
        return [source, "-o", self.parameterAsFileOutput(parameters, "OUTPUT", context)]

    def processAlgorithm(
        self, parameters: dict[str, Any], context: Any, feedback: Any
    ) -> dict[str, Any]:
        argv = self.base_command() + self.arguments(parameters, context)
        argv += option_args(self.options(), self.option_values(parameters, context))
        self.execute(argv, feedback)
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        probe = QgsVectorLayer(output, "probe", "ogr")
        for sub in probe.dataProvider().subLayers() if probe.isValid() else []:
            layer = sub.split(QgsDataProvider.sublayerSeparator())[1]
            _load_styled(context, f"{output}|layername={layer}", layer, "OUTPUT")
        return {"OUTPUT": output, "COMMAND": command_line(argv)}


class RunAlgorithm(GeosegAlgorithm):
    """``geoseg run``: a YAML job file (many scenes, resumable)."""

    command = "run"
    label = "Run a job file"
    about = (
        "Runs a geoseg job file: every scene through predict, land cover, vectorize and "
        "evaluate; steps that are up to date are skipped."
    )

    def add_inputs(self) -> None:
        self.addParameter(
            QgsProcessingParameterFile("JOB", "Job file (YAML)", fileFilter="Job (*.yaml *.yml)")
        )

    def arguments(self, parameters: dict[str, Any], context: Any) -> list[str]:
        return [self.parameterAsFile(parameters, "JOB", context)]

    def processAlgorithm(
        self, parameters: dict[str, Any], context: Any, feedback: Any
    ) -> dict[str, Any]:
        argv = self.base_command() + self.arguments(parameters, context)
        argv += option_args(self.options(), self.option_values(parameters, context))
        self.execute(argv, feedback)
        return {"COMMAND": command_line(argv)}


ALGORITHMS = (PredictAlgorithm, VectorizeAlgorithm, RunAlgorithm)
"""The provider's algorithms."""

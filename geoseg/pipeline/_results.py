"""What a run plans, reports while it runs, and returns: plain values, no work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from geoseg.pipeline._config import Job

__all__ = ["EventStatus", "RunEvent", "RunPlan", "RunReport", "SceneResult", "StepPlan"]

EventStatus = Literal["running", "done", "failed", "skipped", "pending"]


@dataclass(frozen=True)
class StepPlan:
    """What a run would do with one step of one scene.

    Attributes:
        scene: Scene id.
        step: Step name.
        action: ``run`` or ``skip``.
        reason: Why (``new``, ``up to date``, ``options changed: ...``...).
    """

    scene: str
    step: str
    action: Literal["run", "skip"]
    reason: str


@dataclass(frozen=True)
class RunPlan:
    """The plan of a run: every scene × step, run or skipped as up to date.

    Attributes:
        job: The job.
        steps: One entry per scene and step, in run order.
    """

    job: Job
    steps: tuple[StepPlan, ...]

    @property
    def to_run(self) -> int:
        """Number of steps that would run."""
        return sum(s.action == "run" for s in self.steps)

    def format_table(self) -> str:
        """The plan as aligned text, one line per scene and step."""
        job = self.job
        n_sc, n_st = len(job.scenes), len(job.steps)
        head = (
            f"{job.source} -> {job.output}: {n_sc} scene(s) x {n_st} step(s), "
            f"{self.to_run} to run, {len(self.steps) - self.to_run} up to date"
        )
        w_sc = max([5, *(len(s.scene) for s in self.steps)])
        lines = [head, f"{'scene':<{w_sc}}  {'step':<9}  {'action':<6}  reason"]
        for s in self.steps:
            lines.append(f"{s.scene:<{w_sc}}  {s.step:<9}  {s.action:<6}  {s.reason}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunEvent:
    """A step changed state (passed to ``on_event``).

    Attributes:
        scene: Scene id.
        step: Step name.
        status: ``running``, ``done``, ``failed``, ``skipped`` or ``pending``.
        message: Reason, error or summary.
        seconds: Step duration for ``done`` and ``failed``.
    """

    scene: str
    step: str
    status: EventStatus
    message: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class SceneResult:
    """How one scene ended.

    Attributes:
        scene: Scene id.
        status: ``done``, ``failed`` or ``pending`` (the run was stopped).
        steps: Status per step in this run (``done``, ``skipped``, ``failed``, ``pending``).
        error: The first error message, if a step failed.
    """

    scene: str
    status: str
    steps: dict[str, str]
    error: str | None = None


@dataclass(frozen=True)
class RunReport:
    """What :func:`~geoseg.pipeline.run_job` did.

    Attributes:
        output: Output root.
        manifest: The manifest file.
        landcover_csv: The land-cover CSV (None when no scene has a summary).
        scenes: One result per scene, in job order.
        ran: Steps run.
        skipped: Steps skipped as up to date.
        failed: Steps failed.
        failed_checks: Judgements that failed (``evaluate.min_miou``), one line each.
        seconds: Wall time.
    """

    output: Path
    manifest: Path
    landcover_csv: Path | None
    scenes: tuple[SceneResult, ...]
    ran: int
    skipped: int
    failed: int
    failed_checks: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every scene finished and every check passed."""
        return not self.failed_checks and all(s.status == "done" for s in self.scenes)

    def format_table(self) -> str:
        """Per-scene step statuses as aligned text."""
        steps = list(self.scenes[0].steps) if self.scenes else []
        w = max([5, *(len(s.scene) for s in self.scenes)])
        lines = [f"{'scene':<{w}}  {'status':<7}  " + "  ".join(f"{s:<9}" for s in steps)]
        for sc in self.scenes:
            cells = "  ".join(f"{sc.steps.get(s, '-'):<9}" for s in steps)
            lines.append(f"{sc.scene:<{w}}  {sc.status:<7}  {cells}".rstrip())
        return "\n".join(lines)

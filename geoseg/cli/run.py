"""``geoseg run``: a YAML batch job (predict, land cover, vectorize, evaluate per scene)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import PositiveInt, check_scheduler


@click.command(short_help="Run a YAML batch job over many scenes (resumable, cron-safe).")
@click.argument("job", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (what runs, what is up to date); run nothing."
)
@click.option("--force", is_flag=True, help="Run every step again, even if up to date.")
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    callback=check_scheduler,
    help="Dask scheduler address (tcp://host:port); overrides the job's.",
)
@click.option(
    "--workers",
    type=PositiveInt(1),
    default=None,
    show_default="the job's, else 2",
    help="Scenes processed at once (and threads of the local scheduler).",
)
@click.option(
    "--schema",
    "print_schema",
    is_flag=True,
    help="Print the JSON Schema of job files (for editors to complete and check) and exit.",
)
def run(
    job: Path | None,
    *,
    dry_run: bool,
    force: bool,
    scheduler: str | None,
    workers: int | None,
    print_schema: bool,
) -> None:
    """Run the job file JOB: every scene through predict, land cover, vectorize, evaluate.

    The whole file is checked first; every problem is listed (exit 2). Steps whose inputs,
    model and options are unchanged and whose outputs are intact are skipped, so the
    command is safe to repeat from cron: it finishes what an interrupted run left. A lock
    on the output root stops a second run (exit 1). A failed scene is recorded in
    OUTPUT/manifest.json and the others go on; the exit code is 1 if any scene failed.

    \b
    $ geoseg run pipelines/demo.yaml --dry-run
    $ geoseg run pipelines/potsdam.yaml --workers 4
    $ geoseg run pipelines/potsdam.yaml --scheduler tcp://10.0.0.5:8786
    $ geoseg run --schema > geoseg-job.schema.json
    """
    from geoseg.pipeline import JobConfigError, job_json_schema, load_job, plan_job, run_job

    if print_schema:
        import json

        click.echo(json.dumps(job_json_schema(), indent=2))
        return
    if job is None:
        raise click.UsageError("give a job file (JOB), or --schema")

    try:
        loaded = load_job(job)
    except JobConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="JOB") from None
    if dry_run:  # --scheduler and --workers change where a run happens, not what it does
        click.echo(plan_job(loaded, force=force).format_table())
        return

    def on_event(e: Any) -> None:
        if e.status == "running":
            return
        took = f" ({e.seconds:.1f}s)" if e.seconds is not None else ""
        msg = f": {e.message}" if e.message else ""
        click.echo(f"{e.scene} {e.step} {e.status}{took}{msg}")

    report = run_job(loaded, force=force, scheduler=scheduler, workers=workers, on_event=on_event)
    click.echo("")
    click.echo(report.format_table())
    click.echo(
        f"{report.ran} step(s) run, {report.skipped} up to date, {report.failed} failed "
        f"in {report.seconds:.1f}s; manifest: {report.manifest}"
    )
    if report.landcover_csv is not None:
        click.echo(f"land cover: {report.landcover_csv}")
    failed = [s for s in report.scenes if s.status != "done"]
    problems = [f"{s.scene} ({s.error or s.status})" for s in failed]
    problems += list(report.failed_checks)
    if problems:
        raise click.ClickException(
            f"{len(failed)} scene(s) failed, {len(report.failed_checks)} check(s) failed: "
            + "; ".join(problems)
        )

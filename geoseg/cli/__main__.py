"""``python -m geoseg.cli``."""

from geoseg.cli.main import cli

cli(prog_name="geoseg")

"""The geoseg command line: one thin module per command, registered in :mod:`geoseg.cli.main`."""

"""Command-line interface: thin Typer commands over the library (see ``auditor.cli.app``)."""

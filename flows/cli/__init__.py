"""The `linguaforge` command line (main.py lists the commands; one module each)."""

from linguaforge.flows.cli.main import main

__all__ = ["main"]

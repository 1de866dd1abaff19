"""The ``rv2dist`` command line."""

from rv2dist.cli.app import main

__all__ = ["main"]

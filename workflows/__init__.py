"""The command line, configuration and recipes. The Python way in: :func:`run` an ensemble from a config
and get the opened store back; :func:`configure` a config (``docs/python-api.md``)."""

from workflows.api import configure, run

__all__ = ["configure", "run"]

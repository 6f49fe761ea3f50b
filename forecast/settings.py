"""Checks for the library's settings dataclasses (``PerturbationSettings``, ``PlanetConfig``, ...).

Each settings class checks its own fields in ``__post_init__`` with these helpers, which raise a
:class:`forecast.errors.SettingError` naming the field; the same class is the config section, and
``workflows.config.build`` puts the key path in front (``ensemble.perturbation.cycles``), so a setting is
validated in one place whether it comes from a YAML file or from Python.
"""

from __future__ import annotations

import numbers

from forecast.errors import SettingError


def is_number(value) -> bool:
    """A real number, numpy's included (``bool`` is not one).

    >>> is_number(3), is_number(2.5), is_number(True), is_number("3")
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive(value, key: str) -> None:
    """Refuse ``value`` unless it is greater than zero.

    >>> positive(-5, "length_scale_km")
    Traceback (most recent call last):
    forecast.errors.SettingError: length_scale_km must be positive, got -5
    """
    if not value > 0:
        raise SettingError(key, f"must be positive, got {value}")


def at_least(value, low, key: str) -> None:
    """Refuse ``value`` unless it is at least ``low``."""
    if not value >= low:
        raise SettingError(key, f"must be at least {low}, got {value}")


def one_of(value, choices: tuple, key: str) -> None:
    """Refuse ``value`` unless it is one of ``choices``."""
    if value not in choices:
        raise SettingError(key, f"must be one of {choices}, got {value!r}")

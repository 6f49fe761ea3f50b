"""The Python way in: run an ensemble from a notebook and get the opened store back.

Example (minutes on a laptop: it trains the tiny world first; ``tests/workflows/test_python_api.py`` runs
``workflows.run`` on a prepared tiny world)::

    import workflows
    ds = workflows.run("tiny", workdir="tiny-output", prepare=True, ensemble__batch_size=4)
    ds["z500"].sel(lat=52.5, lon=13.4, method="nearest").mean("member")

``forecast`` (the library) never imports ``workflows``; this module may import everything.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path

from workflows.config import Config, ConfigError, build, bundled_config, load_config, umask_bits


def _set(data: dict, key: str, value) -> None:
    target = data
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {key!r}: '{part}' is not a section")
    target[parts[-1]] = value


def configure(config: Config | str | os.PathLike = "demo", workdir: str | os.PathLike | None = None,
              **overrides) -> Config:
    """A :class:`workflows.config.Config` from a Config, a YAML file or a bundled config's name (``"demo"``,
    ``"tiny"``), with ``overrides``: dotted keys with ``__`` for the dot (``ensemble__batch_size=4``) set to
    Python values, checked as the YAML would be.

    >>> configure("tiny", ensemble__members_per_checkpoint=2).ensemble.members_per_checkpoint
    2
    """
    if not isinstance(config, Config):
        path = Path(config)
        if not path.is_file() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
            path = bundled_config(str(config))
        config = load_config(path)
    data = asdict(config)
    data["experiments"] = {name: asdict(section) for name, section in config.experiments.items()}
    for key, value in overrides.items():
        _set(data, key.replace("__", "."), value)
    if workdir is not None:
        _set(data, "paths.workdir", str(workdir))
    return build(Config, data)


@contextlib.contextmanager
def _umask(bits: int):
    previous = os.umask(bits)
    try:
        yield
    finally:
        os.umask(previous)


def run(config: Config | str | os.PathLike = "demo", *, workdir: str | os.PathLike | None = None,
        members: str | None = None, experiment: str | None = None, prepare: bool = False, progress=None,
        **overrides):
    """Run an ensemble (what ``forecast run`` does) and return its store opened with
    :func:`forecast.open_store`.

    Parameters
    ----------
    config : Config, path or name
        The run's configuration (see :func:`configure`; ``overrides`` apply to it).
    workdir : path, optional
        Replaces ``paths.workdir``.
    members : str, optional
        Member range ``"A:B"`` (default all); finished members are skipped, so a rerun resumes.
    experiment : str, optional
        Run this experiment of the config instead of the ``ensemble`` section.
    prepare : bool
        First make what the run needs on the embedded world: the planet, the checkpoints and their skill
        (each skipped when it exists).
    progress : workflows.progress.Progress, optional
        Default: a tqdm bar (a widget in Jupyter with ``ipywidgets``), log lines when not interactive.

    Returns
    -------
    xarray.Dataset
        The whole store (every member, also those run before), lazy on Dask.

    Files are written under the config's ``umask`` (restored afterwards).
    """
    import forecast
    from workflows.progress import Progress
    from workflows.recipes import compute_skill, make_planet, run_ensemble, train_checkpoints

    config = configure(config, workdir, **overrides)
    with _umask(umask_bits(config.umask)):
        if prepare:
            make_planet(config)
            train_checkpoints(config)
            compute_skill(config)
        path = run_ensemble(config, members, None, experiment, progress=progress or Progress("run"))
    return forecast.open_store(path)

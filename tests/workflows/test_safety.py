"""Safety rules, checked on the code itself and on what the commands write.

- checkpoints and arrays are never unpickled: ``torch.load`` only with ``weights_only=True``, no
  ``pickle.load``, ``numpy.load`` never with ``allow_pickle=True``;
- YAML only through ``yaml.safe_load``;
- no shell: no ``shell=True``, ``os.system`` or ``os.popen``, no ``eval``/``exec``;
- what ``forecast`` creates is not readable by others.
"""

import ast
import os
from pathlib import Path

import pytest

from workflows.config import ConfigError, bundled_config, load_config

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGES = ("forecast", "models", "ensembles", "workflows", "bench")


def _name(node) -> str:
    """``torch.load`` for ``torch.load(...)``; the dotted name of a call's function."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expression>")  # model.to(d).eval() is no eval
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<expression>"
    return None


def violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), f"{where}:{node.lineno}"
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{line}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "cloudpickle.load"):
            found.append(f"{line}: {name} unpickles")
        if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{line}: {name} with allow_pickle")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{line}: {name} instead of yaml.safe_load")
        if name.startswith("subprocess.") and _keyword(node, "shell") not in (None, False):
            found.append(f"{line}: {name} with shell=True")
        if name in ("os.system", "os.popen", "eval", "exec"):
            found.append(f"{line}: {name}")
    return found


def test_the_scan_finds_each_kind_of_violation():
    bad = """
import torch, pickle, yaml, subprocess, os, numpy as np
torch.load(path)
torch.load(path, weights_only=False)
pickle.loads(data)
np.load(path, allow_pickle=True)
yaml.load(text)
subprocess.run(f"sbatch {script}", shell=True)
os.system("ls")
"""
    assert len(violations(bad, "bad.py")) == 7
    good = ("torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(t)\nsubprocess.run(['sbatch', s])\n"
            "model.to(device).eval()\n")
    assert violations(good, "good.py") == []


def test_no_unpickling_unsafe_yaml_or_shell_in_the_code():
    found = []
    for package in PACKAGES:
        for path in sorted((REPOSITORY / package).rglob("*.py")):
            found += violations(path.read_text(), str(path.relative_to(REPOSITORY)))
    assert found == []


def test_yaml_tags_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"paths:\n  workdir: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not marker.exists()


def test_what_the_commands_create_is_not_readable_by_others(tiny_world, forecast_processes, tmp_path):
    store = tmp_path / "out" / "ensemble.zarr"
    result = forecast_processes.run("-q", "run", str(bundled_config("tiny")), "--workdir", tiny_world.paths.workdir,
                                    f"paths.store={store}", "--members", "0:1")
    assert result.returncode == 0, result.stderr
    readable = [str(p) for p in [store.parent, *store.parent.rglob("*")] if os.stat(p).st_mode & 0o007]
    assert readable == []

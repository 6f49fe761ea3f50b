"""The package's architecture, checked on the source: imports point one way, no module imports itself
back through others, the launcher's environment is read only in ``workflows/``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("forecast", "models", "ensembles", "workflows")
LAYER = {"forecast": 0, "models": 1, "ensembles": 2, "workflows": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, known) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (a deferred import is still a
    dependency): ``from a.b import c`` counts as ``a.b.c`` when that is a module, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycle(edges) -> list[str]:
    """One import cycle as a list of modules, or an empty list (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            # a package's __init__ importing its own submodules is how re-exports work, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_module_imports_itself_back_through_others():
    assert cycle(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_imports_point_from_workflows_down_to_forecast():
    upward = [(a, b) for a, targets in graph().items() for b in targets
              if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]]
    assert upward == []


def test_data_and_verify_do_not_import_each_other_s_internals():
    """Verification reads truth in any layout through ``forecast.data``'s public names (the package itself,
    never one of its modules); the data readers never import verification."""
    crossing = [(a, b) for a, targets in graph().items() for b in targets
                if {a.split(".")[:2][-1], b.split(".")[:2][-1]} == {"data", "verify"} and a.startswith("forecast.")
                and not (a.startswith("forecast.verify") and b == "forecast.data")]
    assert crossing == []


def test_data_readers_do_not_import_torch():
    code = ("import sys, forecast.data, forecast.data.era5, forecast.data.regrid, forecast.data.lexicon; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_nothing_below_workflows_reads_the_launcher_environment_or_a_config_file():
    readers = [str(p.relative_to(ROOT)) for package in ("forecast", "models", "ensembles")
               for p in (ROOT / package).rglob("*.py")
               if "SLURM_" in p.read_text() or '"RANK"' in p.read_text() or "yaml" in imports_of(p)]
    assert readers == []


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_files_are_renamed_into_place_only_by_the_atomic_write_helper():
    renamers = [str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                if p.name != "files.py" and any(f"{call}(" in p.read_text() for call in ("os.replace", "os.rename"))]
    assert renamers == []


SEED_NAME = re.compile(r"(^|_)seed$")  # seed, base_seed, set_seed; not seed_mask (a tensor)
# splitmix64 mixing of (seed, row id) inside a compiled kernel: per element, where a SHA-256 cannot run
SEED_ARITHMETIC_ALLOWED = {"forecast/hashing.py", "forecast/verify/_kernels.py"}


def seed_arithmetic(path: Path) -> list[str]:
    """Every ``+ - * // % ** << ^`` whose operand is a seed (a name such as ``seed`` or ``base_seed``, also
    inside ``int(...)``), as ``file:line: expression``."""
    def operand(node):
        while isinstance(node, ast.Call) and len(node.args) == 1:  # int(seed), np.uint64(seed)
            node = node.args[0]
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return bool(SEED_NAME.search(name))

    return [f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.BinOp) and (operand(node.left) or operand(node.right))]


def test_seeds_are_derived_only_in_forecast_hashing():
    found = [line for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
             if str(p.relative_to(ROOT)) not in SEED_ARITHMETIC_ALLOWED for line in seed_arithmetic(p)]
    assert found == []


def test_the_seed_arithmetic_finder_finds_seed_arithmetic(tmp_path):
    path = ROOT / "tests" / "test_layers.py"  # this file's own examples below
    found = seed_arithmetic(path)
    assert any("seed + 1" in line for line in found) and any("int(base_seed) * 1000" in line for line in found)
    assert not any("seed_mask" in line for line in found)


def _examples(seed, base_seed, seed_mask, x, i):  # read by the test above, never called
    return seed + 1, int(base_seed) * 1000 + i, seed_mask * x

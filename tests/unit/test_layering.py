"""Import directions: which autotune module may import which, and heavy libraries only where they are owned.

``ARROWS`` below is the table a newcomer reads first (the README shows it too). Each key is a group:
a package (``compiler`` covers ``autotune/compiler/*``) or a top-level module (``space``); ``autotune``
is the package's own ``__init__`` (the public API). A group may import the groups it lists, and its
own modules. Every ``autotune.*`` import counts: top-level and lazy ones inside functions, relative
ones, and type-only ones under ``if TYPE_CHECKING``. The record flow, one way::

    cli → autotune → api → search → evaluate → the trial's decisions → stages → config → leaves
    stages = space, data, models, train, compress, exporter, compiler, tuning, numerics, measure
    the trial's decisions = task, screening, constraints, reference, finalists, deploy

Stages import ``config`` and the leaves, never each other (records are the handshake), with the
exceptions written beside them. To add a module, add its group here with what it needs; an arrow
that is not here is a design question for review, not a line to add to make the test pass.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "autotune"

LEAVES = {"errors", "records", "registry"}
#: config and the leaves: what every stage may import.
BASE = LEAVES | {"config"}

#: group -> the groups it may import (see the module docstring).
ARROWS: dict[str, set[str]] = {
    # leaves: import nothing of ours, or only errors
    "errors": set(),
    "records": {"errors"},
    "registry": {"errors"},
    "log": set(),
    "plugins": {"errors"},  # the one loader of user code ('module:function')
    "quiet": {"errors"},
    "sandbox": {"errors"},
    "curves": set(),  # a trial's training curves: TensorBoard events and curves.json
    "config": {"errors", "registry"},  # schemas and the YAML loader only
    # stages
    "space": BASE | {"compress"},  # each pass declares its settings; the space samples them
    "data": BASE | {"plugins"},
    "models": BASE | {"plugins"},
    "train": BASE | {"data", "quiet"},  # trains on the data set's splits
    "compress": BASE | {"train", "models", "data", "quiet"},  # distill trains a teacher (declared exception)
    "exporter": BASE | {"models"},  # folds BatchNorm with models.layers (declared exception)
    "compiler": BASE | {"quiet", "tuning"},  # the build applies the tuning records
    "tuning": BASE | {"quiet", "measure"},  # the MetaSchedule runner comes from the runner plug-in
    "numerics": BASE,
    "measure": BASE | {"quiet"},
    "predictor": BASE | {"measure", "compiler"},  # the build's version is part of a measurement's environment
    # kernel-level prediction: each fused kernel timed once per device, candidates as their sum
    "kernel_table": BASE | {"compiler", "measure", "quiet"},
    "kernel_predictor": BASE | {"compiler", "kernel_table", "predictor"},
    "blend": BASE | {"predictor"},  # which of the two predicts (or both, weighted)
    "leaderboard": BASE,
    # the trial: the stage sequence and its decisions (LeaderboardRow, in leaderboard/, is the trial's record)
    "task": BASE | {"space", "data", "models", "compress"},
    "constraints": BASE,
    "deploy": BASE | {"compiler", "tuning", "exporter", "numerics", "measure", "compress", "quiet", "leaderboard"},
    "screening": BASE
    | {"task", "constraints", "predictor", "quiet", "leaderboard", "compress"}  # passes say
    | {"kernel_table", "compiler", "exporter"},  # whether they change the deployed structure; a candidate's kernels
    "reference": BASE
    | {"task", "deploy", "quiet", "leaderboard"}
    | {"measure", "predictor"},  # paired timing: the runner's pairing, calibrated per environment
    "evaluate": BASE
    | {"task", "screening", "constraints", "reference", "deploy", "backends", "leaderboard", "quiet", "curves"}
    | {"models", "train", "compress", "exporter", "measure"},
    "finalists": BASE | {"task", "deploy", "evaluate", "compress", "exporter", "quiet", "leaderboard", "reference"},
    # the search and what starts it
    "warmstart": BASE | {"space", "leaderboard"},
    "search": BASE
    | {"log", "space", "leaderboard", "sandbox", "quiet", "warmstart", "predictor", "tuning"}
    | {"kernel_table", "kernel_predictor", "blend"}
    | {"task", "evaluate", "screening", "constraints", "reference", "finalists"}
    | {"catalog", "validate", "preflight", "runs", "reporting"}
    | {"curves"},  # a resumed run's early stopping reads the finished trials' curves
    "catalog": BASE,
    "validate": BASE | {"space", "compress", "data", "models", "plugins"},
    "preflight": BASE | {"compiler", "measure", "models", "plugins", "space", "task", "backends"},
    "runs": BASE | {"leaderboard", "validate"},
    # a finished trial's kernels timed one by one (autotune profile)
    "profiling": BASE
    | {"runs", "catalog", "task", "compress", "exporter", "compiler", "deploy", "measure", "quiet"}
    | {"tuning"},
    # tuning a whole space: sample, fuse and extract as a candidate's build does; Ray for the nodes
    "spacetune": BASE | {"task", "preflight", "exporter", "compiler", "tuning", "search"},
    # what a finished run produces; devices
    "reporting": BASE | {"leaderboard", "space", "predictor", "curves", "profiling"},
    "bundle": BASE | {"task", "compress", "numerics", "compiler", "profiling", "backends"},
    "devices": BASE | {"measure", "backends"},  # the device's RPC server offers the backends
    "backends": BASE | {"quiet", "deploy", "exporter", "numerics", "measure", "compress", "models", "leaderboard"},
    # the front door
    "api": BASE
    | {"catalog", "validate", "preflight", "runs", "search", "task", "evaluate", "leaderboard", "backends"}
    | {"reporting", "bundle", "devices", "predictor", "kernel_table", "warmstart", "spacetune", "profiling"},
    "autotune": BASE | {"api", "leaderboard"},
    "cli_render": {"reporting"},  # what the CLI draws (rich)
    "cli": {"autotune", "errors", "log", "config", "leaderboard", "reporting", "runs", "devices", "space", "search"}
    | {"cli_render"},
}

#: module (path relative to autotune/, glob) -> heavy top-level packages it may import
ALLOWED = {
    "tvm": {"compiler/*", "tuning/*", "numerics.py", "measure/*", "backends/remote.py", "devices/server.py"},
    "onnxruntime": {"backends/onnxruntime.py", "bundle.py"},
    "openvino": {"backends/openvino.py"},
    "ray": {"search/*", "spacetune/nodes.py"},
    "optuna": {"search/*", "space.py"},
    "rich": {"cli.py", "cli_render.py", "log.py"},
}


def _module(path: Path) -> str:
    """``autotune/compiler/build.py`` -> ``autotune.compiler.build``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PKG.rglob("*.py"))}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "autotune"


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """Every autotune module ``module`` imports: (module, line, type_only). ``from pkg import name``
    counts as ``pkg.name`` when that is a module, else as ``pkg``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    type_only = _type_only(tree)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in MODULES and "." in target:  # autotune.config.load.read_yaml -> autotune.config.load
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module:
                out.append((target, node.lineno, id(node) in type_only))
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_arrow_table_names_every_group_and_has_no_cycle():
    missing = {_group(m) for m in MODULES} - set(ARROWS)
    assert not missing, f"groups missing from ARROWS: {sorted(missing)}"
    assert not set().union(*ARROWS.values()) - set(ARROWS), "an arrow points at a group that is not in ARROWS"
    assert not _cycles({g: sorted(t) for g, t in ARROWS.items()}), "the table itself has a cycle"


def test_every_import_follows_an_arrow_of_the_table():
    bad = sorted(
        {
            f"{_group(m)} -> {_group(t)}  ({MODULES[m].relative_to(PKG.parent)}:{line} imports {t})"
            for m, imports in GRAPH.items()
            for t, line, _ in imports
            if _group(t) != _group(m) and _group(t) not in ARROWS.get(_group(m), set())
        }
    )
    assert not bad, "imports not in ARROWS:\n" + "\n".join(bad)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The cycles a depth-first search meets (each once, by its back edge)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    """Imports that run (lazy ones included; ``TYPE_CHECKING`` ones not) form no cycle. A package's
    ``__init__`` re-exporting its submodules is no cycle unless a submodule imports the ``__init__`` back."""
    graph = {m: sorted({t for t, _, type_only in imports if not type_only}) for m, imports in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES), ids=lambda m: str(MODULES[m].relative_to(PKG)))
def test_heavy_imports_only_where_allowed(module):
    rel = str(MODULES[module].relative_to(PKG))
    tree = ast.parse(MODULES[module].read_text())
    libs = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    libs |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
    }
    for lib in libs & set(ALLOWED):
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in ALLOWED[lib]), f"{rel} imports {lib}"


def test_nothing_imports_cli():
    for path in PKG.rglob("*.py"):
        if path.name != "cli.py":
            assert "autotune.cli" not in path.read_text(), path


def test_cli_start_does_not_import_torch_tvm_or_ray():
    code = "import sys, autotune.cli; print(sorted(m for m in ('torch','tvm','ray','optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_checking_a_compression_space_imports_neither_torch_nor_tvm():
    space = PKG.parent / "search_spaces" / "digits_cnn_compress.yaml"
    code = (
        f"import sys, autotune; autotune.check({str(space)!r}, 'host'); "
        "print(sorted(m for m in ('torch','tvm','ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_shadows_a_public_api_function():
    """Importing ``autotune.<name>`` binds the submodule as a package attribute: a module that shares
    a name with a function of ``autotune.__all__`` (``evaluate``, ``search``; ``autotune.export``
    broke that way) must leave the function in place. Checked in a fresh interpreter, after
    importing every submodule of such a name."""
    import autotune

    modules = {p.stem for p in PKG.glob("*.py")} | {p.name for p in PKG.iterdir() if p.is_dir()}
    shared = sorted(modules & {n for n in autotune.__all__ if callable(getattr(autotune, n, None))})
    code = (
        "import importlib, inspect, autotune\n"
        f"for name in {shared!r}:\n"
        "    importlib.import_module('autotune.' + name)\n"
        "    assert inspect.isfunction(getattr(autotune, name)), name\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_importing_autotune_turns_tvm_thread_binding_off_unless_set():
    """TVM would pin the thread that starts its pool, and training in the same process with it."""
    code = "import os, autotune; print(os.environ['TVM_BIND_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "0"
    mine = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "TVM_BIND_THREADS": "1"}
    )
    assert mine.stdout.strip() == "1"  # the user's choice wins

"""Import directions: heavy libraries stay in the modules that own them; the CLI stays thin."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "autotune"

#: module (relative path) -> heavy top-level packages it may import
ALLOWED = {
    "tvm": {"compiler.py", "lowering.py", "numerics.py", "measure/local.py", "measure/rpc.py", "measure/rpc_server.py"},
    "ray": {"tuner.py"},
    "optuna": {"tuner.py", "space.py"},
    "rich": {"cli.py", "log.py"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_heavy_imports_only_where_allowed(path):
    rel = str(path.relative_to(PKG))
    for lib in _imports(path) & set(ALLOWED):
        assert rel in ALLOWED[lib], f"{rel} imports {lib}"


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
    """Importing ``autotune.<name>`` rebinds the package attribute: a module must not share a name
    with a function of ``autotune.__all__`` (``autotune.export`` broke that way)."""
    import autotune

    modules = {p.stem for p in PKG.glob("*.py")} | {p.name for p in PKG.iterdir() if p.is_dir()}
    assert not modules & {n for n in autotune.__all__ if callable(getattr(autotune, n, None))}


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

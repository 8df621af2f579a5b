"""``autotune.plugins.load_plugin``: 'module:attribute' references, searched in the working directory."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from autotune.data import load_data
from autotune.errors import UserError
from autotune.plugins import load_plugin


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A working directory holding a plug-in module; ``sys.path`` restored afterwards."""
    (tmp_path / "h4_plugin_mod.py").write_text(
        "import numpy as np\n\n"
        "VALUE = 42\n\n"
        "def load(seed):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    part = lambda n: (rng.standard_normal((n, 4)).astype('float32'), np.arange(n) % 3)\n"
        "    return part(12), part(6), part(6)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "h4_plugin_mod", raising=False)
    return tmp_path


def test_loads_an_attribute_from_the_working_directory(plugin_dir):
    assert load_plugin("h4_plugin_mod:VALUE") == 42
    assert sys.path[0] == str(plugin_dir)  # the documented edit: the working directory, once
    load_plugin("h4_plugin_mod:load")
    assert sys.path.count(str(plugin_dir)) == 1


def test_a_data_plugin_loads_through_it(plugin_dir):
    d = load_data("h4_plugin_mod:load", val=0.2, test=0.2, seed=0)
    assert d.input_shape == (4,) and d.num_classes == 3 and len(d.x_train) == 12
    assert d.x_train.dtype == np.float32


@pytest.mark.parametrize("ref", ["h4_plugin_mod", "h4_plugin_mod:", ":load", "h4_plugin_mod:not-a-name"])
def test_a_malformed_reference_names_file_and_key(plugin_dir, ref):
    with pytest.raises(UserError, match="must look like") as err:
        load_plugin(ref, file="space.yaml", key="task.model")
    assert (err.value.file, err.value.key) == ("space.yaml", "task.model")


def test_a_missing_module_names_file_and_key(plugin_dir):
    with pytest.raises(UserError, match="cannot import plug-in module 'h4_no_such_mod'") as err:
        load_plugin("h4_no_such_mod:build", file="space.yaml", key="task.data")
    assert (err.value.file, err.value.key) == ("space.yaml", "task.data") and err.value.hint


def test_a_missing_attribute_names_file_and_key(plugin_dir):
    with pytest.raises(UserError, match="has no attribute 'build'") as err:
        load_plugin("h4_plugin_mod:build", file="space.yaml", key="task.model")
    assert (err.value.file, err.value.key) == ("space.yaml", "task.model")


def test_a_data_plugin_that_is_not_a_function_is_refused(plugin_dir):
    with pytest.raises(UserError, match="not a function") as err:
        load_data("h4_plugin_mod:VALUE", val=0.2, test=0.2, seed=0)
    assert err.value.key == "task.data"

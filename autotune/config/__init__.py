"""Schemas of the YAML inputs and their loader."""

from autotune.config.device_profile import DeviceProfile
from autotune.config.load import load_profile, load_space, load_yaml_model
from autotune.config.search_space import METRICS, SearchSpace

__all__ = ["DeviceProfile", "METRICS", "SearchSpace", "load_profile", "load_space", "load_yaml_model"]

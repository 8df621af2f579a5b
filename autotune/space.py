"""Define-by-run sampling: ``(SearchSpace, optuna.Trial) -> flat parameter dict``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from autotune.config.search_space import CategoricalParam, FloatParam, IntParam, SearchSpace

if TYPE_CHECKING:
    import optuna

__all__ = [
    "PARAM_PREFIXES",
    "distribution_of",
    "example_params",
    "param_sections",
    "param_specs",
    "sample_params",
    "spec_key",
    "split_params",
]

#: Leaderboard columns that hold a trial's parameters start with one of these.
PARAM_PREFIXES = ("arch.", "train.", "compress.")


def _suggest(trial: optuna.Trial, name: str, spec: Any) -> Any:
    if isinstance(spec, CategoricalParam):
        return trial.suggest_categorical(name, list(spec.choices))
    if isinstance(spec, IntParam):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    if isinstance(spec, FloatParam):
        return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
    return spec  # a constant


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


def sample_params(space: SearchSpace, trial: optuna.Trial) -> dict[str, Any]:
    """Sample every active parameter; keys are ``'<section>.<name>'`` (``arch.kernel_0``,
    ``compress.prune.ratio``). A compression technique whose ``enabled`` is false samples nothing else.

    A parameter whose ``when`` condition does not hold is left out (inactive); constants are
    included so the record is complete. Per-stage parameters yield one key per stage.
    """
    sections = param_sections(space)
    out: dict[str, Any] = {}
    state: dict[str, str] = {}  # key -> "busy" | "done"

    def resolve(section: str, name: str) -> None:
        key = f"{section}.{name}"
        if state.get(key) == "done":
            return
        state[key] = "done"
        spec = sections[section][name]
        for ref, wanted in (getattr(spec, "when", None) or {}).items():
            sec, _, pname = ref.rpartition(".")
            sec = sec or section
            resolve(sec, pname)
            if not _matches(out.get(f"{sec}.{pname}"), wanted):
                return
        if getattr(spec, "per_stage", False):
            resolve(section, "stages")
            for i in range(int(out[f"{section}.stages"])):
                out[f"{key}_{i}"] = _suggest(trial, f"{key}_{i}", spec)
        else:
            out[key] = _suggest(trial, key, spec)

    for section, params in sections.items():
        if "enabled" in params and section.startswith("compress."):
            resolve(section, "enabled")
            if out.get(f"{section}.enabled") is False:  # a technique switched off: its settings are inactive
                continue
        for name in params:
            resolve(section, name)
    return out


def split_params(params: dict[str, Any], section: str) -> dict[str, Any]:
    """The parameters of one section with the prefix removed."""
    prefix = f"{section}."
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def example_params(space: SearchSpace, seed: int = 0) -> dict[str, Any]:
    """One valid random sample of the space (for checks before a search starts)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return sample_params(space, study.ask())


def param_sections(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Each section's parameters (constants and distributions): ``arch``, ``train`` and one
    ``compress.<technique>`` per compression technique."""
    sections = {"arch": dict(space.arch), "train": dict(space.train or {})}
    if space.compress:
        from autotune.compress import param_sections as compress_sections

        sections.update(compress_sections(space))
    return sections


def param_specs(space: SearchSpace) -> dict[str, Any]:
    """Every searchable parameter by key (``arch.kernel``; per-stage ones under their base name),
    with its distribution spec. Constants are left out."""
    return {
        f"{sec}.{name}": spec
        for sec, params in param_sections(space).items()
        for name, spec in params.items()
        if hasattr(spec, "type")
    }


def spec_key(specs: Mapping[str, Any], key: str) -> str | None:
    """The ``param_specs`` key that samples ``key`` (``arch.kernel`` for ``arch.kernel_1``), or None."""
    if key in specs:
        return key
    head, _, idx = key.rpartition("_")
    if idx.isdigit() and head in specs and getattr(specs[head], "per_stage", False):
        return head
    return None


def distribution_of(specs: Mapping[str, Any], key: str, value: Any) -> Any | None:
    """The Optuna distribution that sampled ``key`` (``specs``: a space's ``param_specs``), or None
    when the key is not a parameter of the space or ``value`` is outside it (a changed space)."""
    import optuna

    base = spec_key(specs, key)
    if base is None:
        return None
    spec = specs[base]
    if isinstance(spec, CategoricalParam):
        return optuna.distributions.CategoricalDistribution(list(spec.choices)) if value in spec.choices else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not spec.low <= value <= spec.high:
        return None
    if isinstance(spec, IntParam):
        if int(value) != value or (value - spec.low) % spec.step:
            return None
        return optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)

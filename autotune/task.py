"""A run's task context: what every trial of a run shares, and one trial's configuration.

``prepare_task`` loads the data set, resolves the model family and validates the compression
settings once per worker; ``make_trial_config`` turns sampled parameters into a ``TrialConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import TRAIN_KEYS, SearchSpace
from autotune.data import DataSplits, load_data
from autotune.errors import CandidateFailed
from autotune.models import ModelFamily, build_model, count_ops, resolve_family
from autotune.records import TrialConfig
from autotune.space import PARAM_PREFIXES, split_params

if TYPE_CHECKING:
    from torch import nn

    from autotune.compress import PassSettings

__all__ = ["Task", "load_trained_model", "make_trial_config", "prepare_task", "worker_env"]


@dataclass(frozen=True)
class Task:
    """What every trial of a run shares: the space, the profile, the data and the model family.

    ``passes`` holds the space's compression settings, validated once (``compress_settings``).
    """

    space: SearchSpace
    profile: DeviceProfile
    data: DataSplits
    family: ModelFamily
    others: tuple[DeviceProfile, ...] = ()  # a multi-device search's other devices
    passes: Mapping[str, PassSettings] = field(default_factory=dict)

    def build(self, config: TrialConfig) -> tuple[nn.Module, dict[str, int]]:
        """The build stage: the candidate's untrained model (seeded) and its exact ``macs`` and ``params``.

        Raises:
            CandidateFailed: stage ``build``: the builder refused this configuration.
        """
        import torch

        torch.manual_seed(config.seed)
        data = self.data
        try:
            model = build_model(self.family, config.arch, data.input_shape, data.num_classes)
        except (ValueError, TypeError, RuntimeError) as err:
            raise CandidateFailed("build", f"{type(err).__name__}: {err}") from err
        if not isinstance(model, torch.nn.Module):
            raise CandidateFailed("build", f"the model builder returned {type(model).__name__}, not a torch.nn.Module")
        macs, n_params = count_ops(model, data.input_shape)
        return model, {"macs": macs, "params": n_params}


def prepare_task(
    space: SearchSpace,
    profile: DeviceProfile,
    *,
    others: tuple[DeviceProfile, ...] = (),
    cache_dir: str | Path | None = None,
) -> Task:
    """Load the data set, resolve the model family and validate the compression settings (once per
    worker). ``cache_dir`` (the run's ``cache/``) keeps decoded image folders for the run's workers."""
    t = space.task
    data = load_data(
        t.data,
        cache_dir=Path(cache_dir) if cache_dir else None,
        val=t.split.val,
        test=t.split.test,
        seed=t.split.seed,
        input_shape=t.input_shape,
        num_classes=t.num_classes,
    )
    passes: dict[str, Any] = {}
    if space.compress:
        from autotune.compress import compress_settings

        passes = compress_settings(space)
    family = resolve_family(t.model)
    return Task(space=space, profile=profile, data=data, family=family, others=tuple(others), passes=passes)


def make_trial_config(
    params: Mapping[str, Any],
    space: SearchSpace,
    *,
    trial_id: str,
    seed: int,
    study_trial: int | None = None,
    passes: Mapping[str, PassSettings] | None = None,
) -> TrialConfig:
    """Fill defaults around the sampled ``params`` (keys ``'arch.x'`` / ``'train.y'``).

    ``passes``: the space's validated compression settings (``Task.passes``); validated here if None.
    """
    constants = {
        f"{section}.{name}": spec
        for section, specs in (("arch", space.arch), ("train", space.train or {}))
        for name, spec in specs.items()
        if not hasattr(spec, "type")
    }
    params = {**constants, **params}
    train = None
    if space.trains:
        train = {**TRAIN_KEYS, **split_params(dict(params), "train")}
    arch = split_params(dict(params), "arch")
    arch["dropout"] = float(train["dropout"]) if train else 0.0
    compress = {}
    if space.compress:
        from autotune.compress import trial_settings

        compress = trial_settings(space, dict(params), validated=dict(passes) if passes else None)
    return TrialConfig(
        trial_id=trial_id,
        params=dict(params),
        arch=arch,
        train=train,
        seed=seed,
        compress=compress,
        study_trial=study_trial,
    )


def worker_env(profile: DeviceProfile) -> dict[str, str]:
    """Environment a process needs before it imports TVM to measure on ``profile``.

    TVM sizes its thread pool once, at import. Thread binding is off: with it, TVM pins the
    calling thread to one core, which would also confine training in the same process.
    """
    return {"TVM_NUM_THREADS": str(profile.measure.threads), "TVM_BIND_THREADS": "0"}


def load_trained_model(row: Mapping[str, Any], task: Task, run_dir: str | Path) -> tuple[TrialConfig, nn.Module]:
    """Re-create a finished trial's model (eval mode, not retrained): ``trials/<id>/weights.pt`` for the
    space's architecture, or ``trials/<id>/model.pt`` (the whole module) when compression changed it."""
    import torch

    params = {k: v for k, v in row.items() if k.startswith(PARAM_PREFIXES) and v is not None}
    seed = int(row.get("seed") or 0)
    cfg = make_trial_config(params, task.space, trial_id=str(row["trial_id"]), seed=seed, passes=task.passes)
    trial_dir = Path(run_dir) / "trials" / cfg.trial_id
    if (trial_dir / "model.pt").exists():  # written by this run's own workers
        return cfg, torch.load(trial_dir / "model.pt", weights_only=False).eval()
    model = build_model(task.family, cfg.arch, task.data.input_shape, task.data.num_classes)
    model.load_state_dict(torch.load(trial_dir / "weights.pt", weights_only=True))
    return cfg, model.eval()

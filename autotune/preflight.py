"""Pre-flight: the checks that need torch or TVM, run once before the first trial of a search.

Each plug-in checks its own part, so a search never starts on a setup that cannot produce a row:

- the compiler (``autotune.compiler.check_profile``): the target resolves, is a CPU target, and the
  cross compiler is on PATH;
- the profile's runner (``RUNNERS[profile.runner.kind].check``): a local runner can run the target's
  code on this machine, an RPC runner's tracker answers and has a server registered;
- the model family: its builder imports and takes ``(params, input_shape, num_classes)``, and builds
  a few configurations of the space: its low corner, its high corner and seeded random samples
  (build only: no training, no compile). A builder that fails for some of them lets the search start
  (those trials become ``failed`` rows); one that fails for all of them is refused, naming the failures.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError

__all__ = ["ModelCheck", "check_model", "preflight", "sample_configs"]

log = logging.getLogger(__name__)

#: How many configurations pre-flight builds (the low corner, the high corner, then random samples).
SAMPLES = 3


@dataclass(frozen=True)
class ModelCheck:
    """What building the sampled configurations showed.

    Attributes:
        built: how many configurations built.
        failures: one line per configuration that did not (its parameters and the error).
    """

    built: int
    failures: tuple[str, ...]


def preflight(
    space: SearchSpace,
    profile: DeviceProfile,
    *,
    profile_file: str,
    space_file: str | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> ModelCheck:
    """Run every check that needs torch or TVM for ``space`` on ``profile``: the target, the runner,
    the data set (loaded; decoded image folders cached in ``cache_dir``) and a few sampled builds.

    Raises:
        UserError: naming the file and key of the first check that fails (see the module docstring).
    """
    from autotune.backends import check_backends
    from autotune.compiler import check_profile
    from autotune.measure import RUNNERS

    check_profile(profile, file=profile_file)
    check_backends(profile, file=profile_file)
    RUNNERS.get(profile.runner.kind, file=profile_file, key="runner.kind").check(profile, file=profile_file)
    return check_model(space, profile, file=space_file, samples=samples, seed=seed, cache_dir=cache_dir)


class _Corner:
    """Stands in for ``optuna.Trial`` in ``autotune.space.sample_params``: every parameter takes its
    lowest value (first choice), its highest (last choice), or a value drawn from ``rng``."""

    def __init__(self, how: str, rng: random.Random) -> None:
        self.how, self.rng = how, rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if self.how == "random":
            return self.rng.choice(list(choices))
        return choices[0] if self.how == "low" else choices[-1]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        top = low + (high - low) // step * step
        if self.how != "random":
            return low if self.how == "low" else top
        if log:
            return min(top, max(low, round(math.exp(self.rng.uniform(math.log(low), math.log(high))))))
        return self.rng.randrange(low, top + 1, step)

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        if self.how != "random":
            return low if self.how == "low" else high
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        value = self.rng.uniform(low, high)
        return min(high, low + round((value - low) / step) * step) if step else value


def sample_configs(space: SearchSpace, n: int = SAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` distinct parameter sets of ``space``: its low corner, its high corner, then seeded
    random samples (the same for the same ``seed``). Conditions and per-stage parameters are honoured."""
    from autotune.space import sample_params

    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(max(n, 1) * 3):  # a small space may have fewer distinct points than n
        if len(out) == n:
            break
        params = sample_params(space, _Corner(("low", "high")[i] if i < 2 else "random", rng))  # type: ignore[arg-type]
        if params not in out:
            out.append(params)
    return out


def _load_builder(space: SearchSpace, family: Any, *, file: str | None) -> Any:
    if ":" in space.task.model:
        from autotune.plugins import load_plugin

        builder = load_plugin(space.task.model, file=file, key="task.model")
    else:
        builder = family.load_builder()
    if not callable(builder):
        raise UserError(f"the model builder {family.builder!r} is not a function", file=file, key="task.model")
    try:
        inspect.signature(builder).bind({}, (1,), 1)
    except TypeError as err:
        raise UserError(
            f"the model builder {family.builder!r} must take (params, input_shape, num_classes): {err}",
            file=file,
            key="task.model",
        ) from None
    except ValueError:  # a builtin without a signature: building will tell
        pass
    return builder


def check_model(
    space: SearchSpace,
    profile: DeviceProfile,
    *,
    file: str | None = None,
    samples: int = SAMPLES,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> ModelCheck:
    """Import the model family's builder, check its signature and build ``samples`` configurations.

    Raises:
        UserError: (``file``, ``task.model``) the builder cannot be imported or called, or no
            configuration builds; the message names each failure.
    """
    import torch

    from autotune.models import build_model
    from autotune.task import make_trial_config, prepare_task

    task = prepare_task(space, profile, cache_dir=cache_dir)
    _load_builder(space, task.family, file=file)
    shape, classes = task.data.input_shape, task.data.num_classes
    failures: list[str] = []
    configs = sample_configs(space, samples, seed)
    for i, params in enumerate(configs):
        cfg = make_trial_config(params, space, trial_id=f"preflight-{i}", seed=seed)
        try:
            model = build_model(task.family, cfg.arch, shape, classes)
        except Exception as err:  # the builder's error, for any configuration, is the user's to read
            failures.append(f"{_short(cfg.arch)}: {type(err).__name__}: {err}")
            continue
        if not isinstance(model, torch.nn.Module):
            failures.append(f"{_short(cfg.arch)}: returned {type(model).__name__}, not a torch.nn.Module")
    if len(failures) == len(configs):
        raise UserError(
            f"the model builder failed for every configuration tried ({len(configs)}): " + "; ".join(failures),
            file=file,
            key="task.model",
            hint="fix the builder, or narrow the space to configurations it can build",
        )
    if failures:
        log.warning(
            "the model builder failed for %d of %d configurations tried (such trials will be failed rows): %s",
            len(failures),
            len(configs),
            "; ".join(failures),
        )
    return ModelCheck(built=len(configs) - len(failures), failures=tuple(failures))


def _short(arch: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "dropout")
    return f"{{{text[:160]}{'...' if len(text) > 160 else ''}}}"

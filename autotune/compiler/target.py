"""The device profile's TVM target: its JSON form, the ``Target`` object, and the compiler's pre-flight check."""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile
from autotune.errors import UserError

if TYPE_CHECKING:
    import tvm

__all__ = ["check_profile", "resolve_target", "target_json"]


def target_json(profile: DeviceProfile) -> dict[str, Any]:
    """The profile's TVM target as a JSON dict; ``{host: true}`` becomes this CPU's LLVM target."""
    t = dict(profile.target)
    if t.pop("host", None) is True:
        import tvm

        cpu = str(tvm.get_global_func("target.llvm_get_system_cpu")())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        t = {"kind": "llvm", "mcpu": cpu, "num-cores": cores, **t}
    return t


def resolve_target(profile: DeviceProfile, *, file: str | None = None) -> tvm.target.Target:
    """Build the TVM ``Target``.

    Raises:
        UserError: TVM rejects the target dict.
    """
    import tvm

    t = target_json(profile)
    try:
        return tvm.target.Target(t)
    except Exception as err:  # TVM raises ValueError / TVMError / InternalError for bad targets
        raise UserError(
            f"TVM rejects the target {json.dumps(t)}: {err}".splitlines()[0], file=file, key="target"
        ) from None


def check_profile(profile: DeviceProfile, *, file: str | None = None) -> None:
    """Pre-flight for the compiler: the target resolves, is a CPU (llvm) target, and the profile's
    cross compiler is on PATH. Cheap apart from importing TVM.

    Args:
        file: the profile's path, named in the error.

    Raises:
        UserError: any of the above fails.
    """
    target = resolve_target(profile, file=file)
    if str(target.kind.name) != "llvm":
        raise UserError(
            f"the {profile.runner.kind} runner measures CPU (llvm) targets only, got {target.kind.name!r}",
            file=file,
            key="target.kind",
            hint="GPU targets are not supported yet",
        )
    if profile.compiler and shutil.which(profile.compiler.split()[0]) is None:
        raise UserError(
            f"the cross compiler {profile.compiler!r} is not on PATH",
            file=file,
            key="compiler",
            hint="install it (the profile's comment says how) or put its directory on PATH",
        )

"""The shipped inputs: search spaces and device profiles found by name (``digits_cnn``, ``host``)."""

from __future__ import annotations

from pathlib import Path

from autotune.config.device_profile import DeviceProfile
from autotune.config.load import load_profile, read_yaml
from autotune.errors import UserError

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_SPACE",
    "PACKAGE_ROOT",
    "kernels_donor",
    "list_profiles",
    "list_spaces",
    "resolve_profile_path",
    "resolve_space_path",
]

#: Where shipped spaces and profiles live (the repository / source checkout).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = "digits_cnn"
DEFAULT_PROFILE = "host"


def _shipped(kind: str) -> Path:
    return PACKAGE_ROOT / kind


def _resolve(path_or_name: str | Path, kind: str) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(path_or_name):
        return p
    return _shipped(kind) / f"{path_or_name}.yaml"  # a shipped name such as 'host'


def resolve_space_path(space: str | Path | None) -> Path:
    """A path, or the name of a shipped space (``digits_cnn``); None is the default."""
    return _resolve(space or DEFAULT_SPACE, "search_spaces")


def resolve_profile_path(device: str | Path | None) -> Path:
    """A path, or the name of a shipped profile (``host``); None is the default."""
    return _resolve(device or DEFAULT_PROFILE, "device_profiles")


def _describe(kind: str) -> list[tuple[str, str, str]]:
    out = []
    for p in sorted(_shipped(kind).glob("*.yaml")):
        try:
            data = read_yaml(p)
            desc = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
        except UserError as err:
            desc = f"(invalid: {err.problem})"
        out.append((p.stem, str(p.relative_to(PACKAGE_ROOT)), desc))
    return out


def list_spaces() -> list[tuple[str, str, str]]:
    """Shipped search spaces as (name, path, description)."""
    return _describe("search_spaces")


def list_profiles() -> list[tuple[str, str, str]]:
    """Shipped device profiles as (name, path, description)."""
    return _describe("device_profiles")


def kernels_donor(profile: DeviceProfile, *, file: str | None = None) -> DeviceProfile | None:
    """The profile whose kernel table ``profile`` starts from (``predictor.kernels_from``), loaded;
    None without one.

    Raises:
        UserError: naming ``file`` and the key, when it cannot be found, does not validate or is
            ``profile`` itself.
    """
    ref = profile.predictor.kernels_from
    if ref is None:
        return None
    path = resolve_profile_path(ref)
    key = "predictor.kernels_from"
    if not path.is_file():
        raise UserError(f"no device profile {ref!r} (looked for {path})", file=file, key=key,
                        hint="a shipped profile's name (autotune profiles) or a path to one")  # fmt: skip
    donor = load_profile(path)
    if donor.name == profile.name:
        raise UserError(f"{ref!r} is this profile: it cannot start from its own kernel table", file=file, key=key)
    return donor

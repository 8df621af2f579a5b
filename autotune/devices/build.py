"""Build the emulated aarch64 device's root filesystem: Debian's arm64 CPython 3.11, TVM's and ONNX
Runtime's aarch64 wheels, and autotune itself (so the device runs ``autotune.devices.server``).

No binfmt_misc, chroot or debootstrap is needed: the arm64 ``.deb`` closure is unpacked with ``dpkg -x``,
the wheels are installed where the emulated Python looks, and a wrapper script runs it under
``qemu-aarch64-static -L ROOT`` with itself as ``argv[0]`` (``-0``), so the RPC server can re-exec
``sys.executable`` for its workers. QEMU user mode shows the guest this machine's x86
``/proc/cpuinfo``, on which ONNX Runtime's CPU detection (cpuinfo) crashes at import; since ``-L``
looks for files under ROOT first, ``ROOT/proc/cpuinfo`` describes a Cortex-A76 instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from autotune.errors import UserError

__all__ = ["DEFAULT_CACHE_DIR", "WHEELS", "build_device", "cache_path"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/autotune/emulated-aarch64"
#: aarch64 wheels installed into the root filesystem; newer apache-tvm-ffi releases segfault with TVM 0.27.
WHEELS = (
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
    "numpy",
    "ml_dtypes",
    "typing_extensions",
    "psutil",
    "cloudpickle",
    "tornado",
    # autotune's RPC server (pydantic profiles, yaml) and the onnxruntime backend
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    "pyyaml",
    "onnxruntime",
    "flatbuffers",
    "packaging",
    "protobuf",
)
#: Debian arm64 packages whose dependency closure makes the root filesystem.
_DEBS = ("python3.11:arm64", "libstdc++6:arm64", "libgcc-s1:arm64")
_PIP_PLATFORM = (
    "--only-binary=:all:",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
    "--abi=abi3",
    "--abi=none",
    "--platform=manylinux_2_28_aarch64",
    "--platform=manylinux2014_aarch64",
    "--platform=manylinux_2_17_aarch64",
    "--platform=any",
)
#: Host commands the device and the rpi4 profiles need, and the Debian package that provides each.
_HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
_WRAPPER = "python3.11-aarch64"
_READY = ".autotune-ready.json"
#: What the guest reads as /proc/cpuinfo (a Cortex-A76 with dotprod, like the rpi5 profile's).
_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""


def _source_digest() -> str:
    """A digest of autotune's own source files, so a changed checkout is copied to the device again."""
    import hashlib

    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent.parent
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _install_autotune(site: Path) -> None:
    """Copy autotune's (pure Python) package into the device's site-packages."""
    pkg = Path(__file__).resolve().parent.parent
    shutil.rmtree(site / "autotune", ignore_errors=True)
    shutil.copytree(pkg, site / "autotune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def cache_path(cache_dir: str | os.PathLike[str]) -> Path:
    """``cache_dir`` with ``~`` expanded, absolute."""
    return Path(cache_dir).expanduser().resolve()


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 900) -> str:
    """Run a build command; a failure becomes a ``UserError`` that shows the command and its last output."""
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"building the emulated device failed: {' '.join(cmd[:3])} ...: {err}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise UserError(
            f"building the emulated device failed: {' '.join(cmd[:4])} ... exited {done.returncode}: {tail}",
            hint="it needs root (apt-get) and access to Debian's package archive and PyPI",
        )
    return done.stdout


def _apt_install(packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise UserError(
            f"the emulated device needs {', '.join(packages)}, and only root can install them",
            hint=f"run: sudo apt-get install -y {' '.join(packages)}",
        )
    try:
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages])
    except UserError:  # stale or missing package lists
        _run(["apt-get", "update"])
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages])


def _arm64_packages() -> list[str]:
    """The arm64 dependency closure of ``_DEBS`` (about 34 packages), enabling arm64 in dpkg if needed."""
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).split():
        if os.geteuid() != 0:
            raise UserError("the emulated device needs arm64 packages", hint="run: sudo dpkg --add-architecture arm64")
        _run(["dpkg", "--add-architecture", "arm64"])
        _run(["apt-get", "update"])
    cmd = ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts"]
    cmd += ["--no-breaks", "--no-replaces", "--no-enhances", *_DEBS]
    if "python3.11:arm64" not in _run(cmd).split():  # the arm64 package lists were never downloaded
        _run(["apt-get", "update"])
    # top-level lines are package names; dpkg, tar and install-info are Essential tools nothing here runs
    skip = ("dpkg:", "tar:", "install-info:")
    return sorted({n for n in _run(cmd).splitlines() if n.endswith(":arm64") and not n.startswith((" ", *skip))})


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_device(cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR) -> Path:
    """Build the aarch64 root filesystem with Python and TVM once; later calls return at once.

    Installs ``qemu-user-static`` and ``gcc-aarch64-linux-gnu`` (the cross compiler the rpi4 profiles
    name) with apt-get when missing (as root), enables the arm64 architecture in dpkg, downloads the
    arm64 ``.deb`` closure of Python 3.11 (~14 MB) and unpacks it with ``dpkg -x``, then downloads the
    aarch64 wheels of ``WHEELS`` (~140 MB) and installs them where the emulated Python looks, and
    copies autotune's package there (again whenever its source changes). About half a minute with
    warm caches; 530 MB on disk.

    Args:
        cache_dir: where the root filesystem, downloads, logs and pid file live.

    Returns:
        The wrapper script that runs the emulated ``python3.11``.

    Raises:
        UserError: not root and a package is missing, or a download or install failed.
    """
    cache = cache_path(cache_dir)
    root, work = cache / "arm64root", cache / "emuwork"
    wrapper, ready = root / _WRAPPER, root / _READY
    with _locked(cache):
        missing = [pkg for tool, pkg in _HOST_TOOLS.items() if shutil.which(tool) is None]
        if missing:
            _apt_install(missing)
        site = root / "usr/local/lib/python3.11/dist-packages"
        state = json.loads(ready.read_text()) if ready.is_file() else {}
        if state.get("wheels") == list(WHEELS):
            digest = _source_digest()
            if state.get("autotune") != digest:
                _install_autotune(site)
                ready.write_text(json.dumps({**state, "autotune": digest}))
            return wrapper
        t0 = time.perf_counter()
        debs, wheels = work / "debs", work / "whl"
        for d in (debs, wheels, root):
            d.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", "download", *_arm64_packages()], cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)])
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "download", "--no-deps", *_PIP_PLATFORM, "-d", str(wheels), *WHEELS])
        # Debian's site.py looks here; under `qemu -L ROOT` it also shadows the host's own site-packages.
        files = [str(w) for w in sorted(wheels.glob("*.whl"))]
        _run([*pip, "install", "--no-deps", "--no-index", "--upgrade", "--target", str(site), *_PIP_PLATFORM, *files])
        qemu = shutil.which("qemu-aarch64-static")
        wrapper.write_text(f'#!/bin/sh\nexec {qemu} -L "{root}" -0 "{wrapper}" "{root}/usr/bin/python3.11" "$@"\n')
        wrapper.chmod(0o755)
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc" / "cpuinfo").write_text(_CPUINFO)
        _install_autotune(site)
        check = "import tvm, tvm.rpc, onnxruntime, autotune.devices.server; print(tvm.__version__)"
        version = _run([str(wrapper), "-c", check], timeout_s=300).strip().splitlines()[-1]
        ready.write_text(json.dumps({"wheels": list(WHEELS), "tvm": version, "autotune": _source_digest()}))
        log.info("built the emulated aarch64 device (TVM %s) in %.0f s", version, time.perf_counter() - t0)
    return wrapper

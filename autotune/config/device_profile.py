"""``DeviceProfile``: the schema of a device-profile YAML file (``device_profiles/*.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DeviceProfile", "Limits", "Measure", "Numerics", "Peak", "Power", "Runner", "TARGET_KINDS", "Tuning"]

TARGET_KINDS = ("llvm", "cuda", "rocm", "vulkan", "opencl", "metal")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measure(_Strict):
    """How latency is timed with TVM's time evaluator (per repeat: ``number`` calls).

    Repeats run in rounds of ``min_repeat`` until the median's confidence interval is within
    ``ci_target`` of it or ``repeat`` repeats have run: a steady device is timed in a third of the
    time, a noisy one as long as before."""

    warmup: int = Field(default=10, ge=0, description="Untimed calls before timing.")
    number: int = Field(default=20, ge=1, description="Calls averaged into one repeat.")
    repeat: int = Field(default=15, ge=3, description="Most repeats; median, p90 and CoV are over those run.")
    min_repeat: int = Field(
        default=5, ge=3, description="Repeats always run (at most 'repeat'); more until 'ci_target' is met."
    )
    ci_target: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Stop repeating once the median's ~95 % CI is within ± this fraction of it (0: always 'repeat').",
    )
    min_repeat_ms: int = Field(default=20, ge=0, description="Grow 'number' until a repeat takes this long.")
    threads: int = Field(default=1, ge=1, description="TVM runtime threads while timing.")
    paired: bool = Field(
        default=False,
        description="Time each candidate in rounds interleaved with the run's reference network (local runner): "
        "latency_ms = the median candidate / reference ratio × the reference's calibrated latency, steady on a "
        "machine whose speed changes from second to second (a shared VM).",
    )
    paired_rounds: int = Field(
        default=20, ge=3, description="Paired rounds run at least; up to twice as many until 'ci_target' is met."
    )

    @model_validator(mode="after")
    def _check(self) -> Measure:
        if "min_repeat" in self.model_fields_set and self.min_repeat > self.repeat:
            raise ValueError(f"min_repeat ({self.min_repeat}) must be <= repeat ({self.repeat})")
        return self


class Numerics(_Strict):
    """Tolerances of the compiled-vs-PyTorch check made before any row is written."""

    samples: int = Field(default=16, ge=1, description="Held-out inputs compared one by one.")
    atol: float = Field(default=1e-4, gt=0, description="Allowed |tvm - torch| on the outputs, absolute part.")
    rtol: float = Field(
        default=1e-4, ge=0, description="Relative part: the bound is atol + rtol * max|torch output| (float32 scale)."
    )
    min_top1_agreement: float = Field(default=1.0, ge=0, le=1)


class Power(_Strict):
    """Power figures for the energy model, used when no meter can be read."""

    idle_w: float = Field(ge=0, description="Watts with the device idle.")
    active_w: float = Field(gt=0, description="Watts while running inference.")
    source: str = Field(min_length=1, description="Where the figures come from (datasheet, measurement).")

    @model_validator(mode="after")
    def _check(self) -> Power:
        if self.active_w < self.idle_w:
            raise ValueError(f"active_w ({self.active_w}) must be >= idle_w ({self.idle_w})")
        return self


class Peak(_Strict):
    """The device's measured peaks (``autotune device calibrate``); ``roofline_fraction`` divides by them."""

    fp32_gflops: float = Field(gt=0, description="Peak fp32 GFLOP/s with 'threads' threads (a tuned matmul).")
    bandwidth_gbs: float | None = Field(default=None, gt=0, description="Memory bandwidth, GB/s (STREAM-like).")
    threads: int = Field(ge=1, description="Threads the peaks were measured with: must be measure.threads.")
    source: str = Field(min_length=1, description="How and when the peaks were measured.")


class Runner(_Strict):
    """Where compiled candidates run: ``local`` (this machine) or ``rpc`` (a device behind a TVM RPC tracker).

    The RPC fields apply to ``kind: rpc`` only, which needs ``tracker`` and ``key``.
    """

    kind: Literal["local", "rpc"] = "local"
    tracker: str | None = Field(default=None, description="RPC tracker address, 'host:port'.")
    key: str | None = Field(default=None, min_length=1, description="Device key the RPC server registered.")
    priority: int = Field(default=0, description="Priority of this run's requests at the tracker (higher first).")
    session_timeout_s: float = Field(default=120, gt=0, description="The server ends a session after this long.")
    request_timeout_s: float = Field(default=30, gt=0, description="Wait this long for a free device of the key.")
    retries: int = Field(
        default=1,
        ge=0,
        description="New sessions tried when the device is lost mid-measurement or a session never starts.",
    )
    emulated: bool = Field(default=False, description="The device is emulated: its timings are labelled so.")

    @field_validator("tracker")
    @classmethod
    def _check_tracker(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be 'host:port' with a port in [1, 65535]")
        return v

    @model_validator(mode="after")
    def _check_kind(self) -> Runner:
        if self.kind == "rpc":
            missing = [name for name in ("tracker", "key") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"kind: rpc needs {' and '.join(missing)} (e.g. tracker: '127.0.0.1:9190', key: rpi4)")
        elif self.model_fields_set - {"kind"}:
            raise ValueError(
                f"kind: local takes no RPC settings, got {', '.join(sorted(self.model_fields_set - {'kind'}))}"
            )
        return self

    @property
    def tracker_address(self) -> tuple[str, int]:
        """The tracker's (host, port); ``kind: rpc`` only."""
        if self.tracker is None:
            raise ValueError("a local runner has no tracker")
        host, _, port = self.tracker.rpartition(":")
        return host, int(port)


class Limits(_Strict):
    """Device limits; each becomes a hard constraint of every search on this profile."""

    memory_bytes: int | None = Field(default=None, gt=0, description="Bound on peak_mem_bytes.")
    size_bytes: int | None = Field(default=None, gt=0, description="Bound on size_bytes.")


class Tuning(_Strict):
    """MetaSchedule tuning: trial budgets per candidate and for the finalists of a search (0 = untuned)."""

    trials_per_candidate: int = Field(default=0, ge=0, description="Tuning trials for every candidate; 0 = untuned.")
    finalists: int = Field(default=0, ge=0, description="Best candidates re-tuned when the search ends.")
    trials_per_finalist: int = Field(default=0, ge=0, description="Tuning trials for each finalist.")
    database: str | None = Field(
        default=None,
        min_length=1,
        description="Directory of the tuning database, kept across runs (relative: to the working directory); "
        "default <results_dir>/tuning_db/<profile>.",
    )
    default_schedules: bool = Field(
        default=True,
        description="Give every kernel no tuned record covers a default schedule (parallel, vectorised, "
        "tiled; no measuring). false: TVM's untuned lowering (scalar loop nests).",
    )

    @model_validator(mode="after")
    def _check(self) -> Tuning:
        if (self.finalists > 0) != (self.trials_per_finalist > 0):
            raise ValueError(
                f"finalists ({self.finalists}) and trials_per_finalist ({self.trials_per_finalist}) "
                "must both be 0 or both be > 0"
            )
        return self


class PredictorSettings(_Strict):
    """The latency predictor of a profile."""

    kernels_from: str | None = Field(
        default=None,
        min_length=1,
        description="Another profile (a shipped name, or a path relative to the working directory) whose "
        "kernel table, in the same results "
        "directory, this one starts from: its kernel times, scaled per operator kind to this device, stand "
        "in for kernels this profile has not timed (a new device predicts after ~20 measurements).",
    )


class DeviceProfile(_Strict):
    """A device: its TVM target, how to measure on it, its power figures and limits."""

    name: str = Field(min_length=1)
    description: str = ""
    target: dict[str, Any] = Field(
        description="TVM target as a JSON dict (kind, mtriple, mcpu, mattr, num-cores, ...), "
        "or {host: true} to detect this machine's CPU."
    )
    compiler: str | None = Field(default=None, description="Cross compiler for export_library.")
    attach: tuple[str, ...] = Field(
        default=(),
        description="Commands run on the device to attach it to the tracker (for people; autotune does not run them).",
    )
    runner: Runner = Runner()
    measure: Measure = Measure()
    numerics: Numerics = Numerics()
    meter: Literal["auto", "none", "rapl", "nvml", "jetson"] = Field(
        default="auto", description="Energy meter; 'auto' uses the first readable one, else the model."
    )
    power: Power
    peak: Peak | None = None
    limits: Limits = Limits()
    tuning: Tuning = Tuning()
    predictor: PredictorSettings = PredictorSettings()
    backends: tuple[str, ...] = Field(
        default=("tvm",),
        min_length=1,
        description="Runtimes each candidate is built, checked and timed with (tvm, onnxruntime, openvino); "
        "the first fills the usual columns, each other <column>@<backend>.",
    )

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({b for b in v if v.count(b) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} named twice")
        return v

    @model_validator(mode="after")
    def _check_target(self) -> DeviceProfile:
        t = self.target
        if t.get("host") is True:
            extra = set(t) - {"host", "num-cores", "mattr"}
            if extra:
                raise ValueError(f"with host: true only num-cores and mattr may be set, got {sorted(extra)}")
            return self
        if "host" in t and t["host"] is not True and not isinstance(t["host"], dict):
            raise ValueError("target.host must be true (detect this CPU) or a target dict")
        kind = t.get("kind")
        if kind not in TARGET_KINDS:
            raise ValueError(f"target.kind must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")
        return self

    @model_validator(mode="after")
    def _check_tuning(self) -> DeviceProfile:
        t = self.tuning
        if not (t.trials_per_candidate or t.trials_per_finalist):
            return self
        if self.backends[0] != "tvm":
            raise ValueError(
                f"tuning applies to the tvm backend, but the first of backends is {self.backends[0]!r}: "
                "put tvm first, or set the tuning trials to 0"
            )
        if self.target.get("kind", "llvm") != "llvm" and not self.is_host:
            raise ValueError("tuning needs an llvm (CPU) target")
        if self.compiler and self.runner.kind == "local":
            raise ValueError(
                "tuning measures where the runner runs: a cross-compiled target needs the rpc runner "
                "(MetaSchedule's RPC runner times candidates on the device)"
            )
        return self

    @model_validator(mode="after")
    def _check_paired(self) -> DeviceProfile:
        if self.measure.paired and self.runner.kind != "local":
            raise ValueError(
                f"measure.paired interleaves each candidate with a reference network in the timing process, "
                f"which the {self.runner.kind} runner does not do: set measure.paired to false"
            )
        if self.measure.paired and self.backends != ("tvm",):
            raise ValueError(
                "measure.paired puts TVM's latencies on the reference network's scale, which other backends' "
                "timings are not: use backends [tvm] with it, or set measure.paired to false"
            )
        return self

    @model_validator(mode="after")
    def _check_peak(self) -> DeviceProfile:
        if self.peak is not None and self.peak.threads != self.measure.threads:
            raise ValueError(
                f"peak.threads ({self.peak.threads}) must equal measure.threads ({self.measure.threads}): "
                "re-run 'autotune device calibrate' with --threads"
            )
        return self

    def unpaired(self) -> DeviceProfile:
        """This profile with ``measure.paired`` off (raw latency: calibration, kernel shares)."""
        return self.model_copy(update={"measure": self.measure.model_copy(update={"paired": False})})

    @property
    def is_host(self) -> bool:
        return self.target.get("host") is True

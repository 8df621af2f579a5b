"""``compile_artifact``: an exported program + device profile → a TVM shared library on disk.

The build is a named pass pipeline in TVM's style. After the PyTorch import, the module goes through
three tables of named steps, in order:

    PREPARE    FoldBatchnormToConv2D, DecomposeOpsForInference, Precision (``autotune.compiler.precision``),
               StridedConvs (column phases for contiguous loads, ``autotune.compiler.strided``),
               DotProduct (int8 onto the CPU's dot-product instructions, ``autotune.compiler.dot_rewrite``),
               Simplify (divisions by constants as products, reshape chains merged, ``autotune.compiler.simplify``),
               Int8Inputs (float depthwise layers of an int8 model read int8, ``autotune.compiler.int8_inputs``),
               Rounding (quantizers round as they convert on x86, ``autotune.compiler.rounding``)
    FUSE       TVM's CPU library dispatch and legalization + fusion, then the dot-product kernels'
               own schedules: the fused PrimFuncs are the tuning workloads
    SCHEDULE   default schedules (``autotune.tuning.default``) for every fused PrimFunc no tuned
               record covers: parallel, vectorised, tiled code without measuring
    FINALIZE   TVM's CPU dataflow lowering and finalization (memory planning, VM code)

With a ``TuningRequest``, ``autotune.tuning.tune`` runs MetaSchedule on the fused module between
FUSE and SCHEDULE and ``autotune.tuning.apply_database`` applies the database's best schedules.
Without SCHEDULE (``tuning.default_schedules: false``), FUSE + FINALIZE is exactly TVM's default CPU
pipeline: scalar loop nests. Then ``relax.build`` generates code (the VM's own function compiled too,
``EXEC_MODE``) and the library is exported (with the profile's cross ``compiler`` when it has one).

To add a step, append a ``Step`` to the table where it belongs: a name, and a function
``(module, BuildOptions) → module`` (return the module unchanged where the step does not apply).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.compiler.dot_kernels import schedule_dot
from autotune.compiler.dot_rewrite import to_dot_product
from autotune.compiler.int8_inputs import int8_inputs
from autotune.compiler.memory import const_bytes, planned_bytes
from autotune.compiler.precision import dtype_census, set_precision
from autotune.compiler.rounding import rounded_conversions
from autotune.compiler.simplify import simplify
from autotune.compiler.strided import split_strided_convs
from autotune.compiler.target import resolve_target, target_json
from autotune.compiler.workloads import call_counts, workloads_of, write_workloads
from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, UserError, describe
from autotune.quiet import QuietLock
from autotune.records import KERNELS_LIBRARY, CompiledArtifact
from autotune.tuning import TuningDatabase, TuningRequest, apply_database, tune
from autotune.tuning.default import apply_default_schedules

if TYPE_CHECKING:
    import tvm
    from torch.export import ExportedProgram

__all__ = [
    "BUILD_VERSION",
    "FINALIZE",
    "FUSE",
    "PREPARE",
    "SCHEDULE",
    "BuildOptions",
    "Step",
    "compile_artifact",
    "fused_module",
    "run_steps",
]

log = logging.getLogger(__name__)

#: Version of the code the build generates for a given workload (default schedules, int8 kernels):
#: bump it when that changes, so timings of the old code (predictor history, kernel tables) are set
#: aside. What each bump changed: ``git log -G"^BUILD_VERSION = " autotune/compiler/build.py``
#: (15-17: int8 depthwise inputs converted in the padding on AVX-512, phases in power-of-two lanes,
#: strided int8 depthwise layers over byte phases; 18: the dot-product kernels' operations counted,
#: a feature of the kernel tables' entries; 19: byte phases only for large strided layers; 20: the
#: dot-product kernels' accumulators start at the VNNI shift's correction; 21: quantizers round as
#: they convert on x86; 22: float squeeze-excite convolutions as matmuls).
BUILD_VERSION = 22


#: How the Relax VM runs a model's own function (the kernel calls, the allocations): ``compiled``
#: generates it as machine code beside the kernels instead of interpreting bytecode; per inference,
#: 32.7 → 30.5 µs (fp32) and 37.5 → 33.0 µs (int8) on a 3×32×32 MobileNet, Zen 5, 1 thread.
EXEC_MODE = "compiled"


@dataclass(frozen=True)
class BuildOptions:
    """What the steps of one build may read.

    Attributes:
        target: the TVM target.
        precision: the deployment precision (a key of ``autotune.compiler.precision.PRECISIONS``).
        weight_granularity: the int8 weight scales, ``tensor`` or ``channel``.
        default_schedules: schedule the kernels no tuned record covers (the SCHEDULE step).
    """

    target: tvm.target.Target
    precision: str = "fp32"
    weight_granularity: str = "tensor"
    default_schedules: bool = True


@dataclass(frozen=True)
class Step:
    """One named step of the build: ``apply(module, options)`` returns the transformed module."""

    name: str
    apply: Callable[[tvm.IRModule, BuildOptions], tvm.IRModule]


def _relax_pass(name: str) -> Step:
    """A step running the Relax pass ``relax.transform.<name>()``."""

    def apply(mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
        from tvm import relax

        return getattr(relax.transform, name)()(mod)

    return Step(name, apply)


def _cpu_passes(name: str, *groups: str) -> Step:
    """A step running the pass groups of TVM's CPU pipeline (``relax.backend.cpu_generic.pipeline``)."""

    def apply(mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
        import tvm
        from tvm.relax.backend.cpu_generic import pipeline as cpu

        with options.target:
            passes = [p for group in groups for p in getattr(cpu, group)(options.target)]
            return tvm.transform.Sequential(passes, name=name)(mod)

    return Step(name, apply)


#: After the import: the steps every candidate goes through before legalization.
PREPARE: tuple[Step, ...] = (
    _relax_pass("FoldBatchnormToConv2D"),  # plug-in models keep their BN
    _relax_pass("DecomposeOpsForInference"),
    Step("Precision", lambda mod, o: set_precision(mod, o.precision, o.weight_granularity, o.target)),
    # after Precision: fp16's ToMixedPrecision rejects call_tir; before DotProduct: its im2col reads
    # the phases of a strided int8 convolution with contiguous loads
    Step("StridedConvs", lambda mod, o: split_strided_convs(mod)),
    Step("DotProduct", lambda mod, o: to_dot_product(mod, o.target)[0] if o.precision == "int8" else mod),
    Step("Simplify", lambda mod, o: simplify(mod)),
    # after Simplify: it crops the taps of depthwise kernels that read only padding
    Step("Int8Inputs", lambda mod, o: int8_inputs(mod)[0] if o.precision == "int8" else mod),
    # last: the passes before it recognise the quantizers by their round and clip
    Step("Rounding", lambda mod, o: rounded_conversions(mod, o.target)[0]),
)


#: Legalization and fusion: afterwards the fused PrimFuncs are the tuning workloads.
def _dot_schedules(mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
    """Schedule each fused kernel built on a dot-product kernel (``schedule_dot``)."""
    import tvm

    out = mod
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get("tir.is_scheduled", False):
            scheduled = schedule_dot(func)
            if scheduled is not None:
                out = out.clone() if out is mod else out
                out.update_func(gv, scheduled)
    return out


def vectorizable_rounding() -> None:
    """Let TVM's vectorizer keep ``nearbyint`` (what Relax's ``round`` lowers to) in vectors. TVM
    0.27 marks ``tirx.round`` vectorizable but not ``tirx.nearbyint``, so every quantizer's rounding
    was split into scalar calls and left to LLVM (a 28×28 quantize kernel: 40 µs, 7 µs with this)."""
    import tvm

    if not tvm.ir.Op.get("tirx.nearbyint").get_attr("TVectorizable"):
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


def _reshape_views(mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
    """Each kernel that only reshapes becomes a view (no copy) and its PrimFunc goes: scheduled, it
    would no longer be recognised (TVM's pipeline does this only when lowering to VM code)."""
    from tvm import relax

    return relax.transform.DeadCodeElimination()(relax.transform.RewriteDataflowReshape()(mod))


FUSE: tuple[Step, ...] = (
    _cpu_passes("CPULegalizeAndFuse", "library_dispatch_passes", "legalize_passes"),
    Step("RewriteDataflowReshape", _reshape_views),
    Step("DotSchedules", _dot_schedules),
)


def _default_schedules(mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
    vectorizable_rounding()  # before anything is lowered: the model, or its kernels one by one
    return apply_default_schedules(mod, options.target) if options.default_schedules else mod


#: The kernels no tuned record covers: default schedules (``autotune.tuning.default``).
SCHEDULE: tuple[Step, ...] = (Step("DefaultSchedules", _default_schedules),)
#: Lowering to VM code, after the schedules are applied.
FINALIZE: tuple[Step, ...] = (_cpu_passes("CPUFinalize", "dataflow_lower_passes", "finalize_passes"),)


def run_steps(steps: Sequence[Step], mod: tvm.IRModule, options: BuildOptions) -> tvm.IRModule:
    """Run ``steps`` in order.

    Raises:
        CandidateFailed: stage ``compile`` (or the step's own), naming the step that failed.
    """
    for step in steps:
        t0 = time.perf_counter()
        try:
            mod = step.apply(mod, options)
        except CandidateFailed:
            raise
        except Exception as err:  # TVMError and friends: this candidate cannot be lowered
            raise CandidateFailed("compile", describe(err)) from err
        log.debug("build step %s: %.3f s", step.name, time.perf_counter() - t0)
    return mod


@contextlib.contextmanager
def _shared(lock: QuietLock | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with lock.shared():
        yield


def _import(program: ExportedProgram) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_exported_program

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return from_exported_program(program, keep_params_as_input=False)
    except Exception as err:  # unsupported ops raise assorted errors inside the importer
        raise CandidateFailed("import", describe(err)) from err


def _export(ex: tvm.runtime.Module, path: Path, profile: DeviceProfile) -> None:
    try:
        if profile.compiler:
            from tvm.support import cc

            ex.export_library(str(path), fcompile=cc.cross_compiler(profile.compiler))
        else:
            ex.export_library(str(path))
    except Exception as err:  # the C compiler or linker failed
        raise CandidateFailed("compile", describe(err)) from err


def fused_module(program: ExportedProgram, profile: DeviceProfile, *, precision: str = "fp32") -> tvm.IRModule:
    """The program imported, prepared and fused as ``compile_artifact`` does it: the module whose fused
    PrimFuncs are the tuning workloads (``autotune tune`` extracts them from it).

    Raises:
        CandidateFailed: an operator cannot be imported, or a step fails.
    """
    options = BuildOptions(target=resolve_target(profile), precision=precision)
    return run_steps(FUSE, run_steps(PREPARE, _import(program), options), options)


def _tuned_share(mod: tvm.IRModule) -> tuple[float, set[str]]:
    """The share of the fused kernels (PrimFuncs) that a tuning record scheduled (``apply_database``
    marks them ``tir.is_scheduled``; 0.0 without kernels), and their names."""
    import tvm

    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    tuned = {n for n, f in funcs.items() if f.attrs and bool(f.attrs.get("tir.is_scheduled", False))}
    return (len(tuned) / len(funcs) if funcs else 0.0), tuned


def compile_artifact(
    program: ExportedProgram,
    *,
    profile: DeviceProfile,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    tuning: TuningRequest | None = None,
    precision: str = "fp32",
    weight_granularity: str = "tensor",
    lock: QuietLock | None = None,
) -> CompiledArtifact:
    """Import into Relax, compile for the profile's target and export ``model.so``.

    ``precision`` is the deployment precision: ``fp32``; ``fp16`` (mixed precision, fp32 accumulation);
    or ``int8``, where every convolution and matmul fed by an 8-bit symmetric activation quantizer and
    holding 8-bit weights (``weight_granularity`` scales, see ``autotune.compiler.precision``) becomes
    an int8 × int8 → int32 operator. ``int8_ops`` / ``compute_ops`` count them in the compiled module.

    ``peak_mem_bytes`` is read from TVM's static memory plan: the weights plus every storage
    block ``main`` allocates (``peak_mem_source = 'tvm_memory_plan'``).

    Args:
        tuning: tune with MetaSchedule first (when ``tuning.trials > 0``) and apply the database's
            best schedules (``autotune.tuning.tune``); ``tuned_share`` says how many kernels they
            cover. With a request, this function takes ``tuning.lock`` itself (shared while
            compiling, exclusive while tuning): call it without holding that lock.
            ``compile_s`` then excludes ``tune_s`` and lock waits.
        lock: without ``tuning``, the quiet lock to hold shared for each phase (import, lowering,
            code generation, linking) rather than for the whole compile, so a trial waiting to time
            a candidate waits for one phase at most. Call it without holding that lock.

    Raises:
        CandidateFailed: an operator cannot be imported (``import``), TVM fails to compile
            (``compile``) or to tune (``tune``).
        UserError: the tuning database was made for another target.
    """
    from tvm import relax

    target = resolve_target(profile)
    if tuning is not None and target.kind.name != "llvm":
        raise UserError(f"tuning supports llvm (CPU) targets, not {target.kind.name}", key="tuning")
    options = BuildOptions(
        target=target,
        precision=precision,
        weight_granularity=weight_granularity,
        default_schedules=profile.tuning.default_schedules,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = tuning.lock if tuning else lock
    report = None
    with _shared(lock):  # each phase holds the lock on its own, so a waiting timer gets in between
        t0 = time.perf_counter()
        mod = _import(program)
        t1 = time.perf_counter()
    with _shared(lock):
        t2 = time.perf_counter()
        mod = run_steps(PREPARE, mod, options)
        census = dtype_census(mod)
        fused = run_steps(FUSE, mod, options)
        if tuning is None:
            lowered = run_steps(SCHEDULE + FINALIZE, fused, options)
        compile_s = time.perf_counter() - t2
    tuned_share, tuned = 0.0, set()
    if tuning is not None:
        db = TuningDatabase(tuning.db_dir)
        trials, seed = tuning.trials, tuning.seed
        if trials > 0:
            report = tune(fused, target=target, db_dir=db.directory, trials=trials, lock=lock, seed=seed,
                          profile=profile)  # fmt: skip
        with _shared(lock):
            t2 = time.perf_counter()
            applied = apply_database(fused, target, db)
            tuned_share, tuned = _tuned_share(applied)
            lowered = run_steps(SCHEDULE + FINALIZE, applied, options)
            compile_s += time.perf_counter() - t2
    with _shared(lock):
        t3 = time.perf_counter()
        weights = const_bytes(mod)
        planned = planned_bytes(lowered)
        try:  # the VM's own code compiled too, not interpreted (EXEC_MODE)
            ex = relax.build(lowered, target=target, relax_pipeline=None, exec_mode=EXEC_MODE)
        except Exception as err:  # TVMError and friends: this candidate cannot be compiled
            raise CandidateFailed("compile", describe(err)) from err
        compile_s += time.perf_counter() - t3
    with _shared(lock):
        t4 = time.perf_counter()
        path = out / "model.so"
        _export(ex, path, profile)
        if profile.runner.kind == "rpc":  # the kernels alone, for the device's kernel table
            _export(ex.mod.imports[0], out / KERNELS_LIBRARY, profile)
        compile_s += time.perf_counter() - t4
    write_workloads(out, workloads_of(fused, tuned, call_counts(fused)))
    return CompiledArtifact(
        path=str(path),
        target=json.dumps(target_json(profile), sort_keys=True),
        input_shape=tuple(input_shape),
        artifact_bytes=path.stat().st_size,
        weights_bytes=weights,
        peak_mem_bytes=weights + planned,
        peak_mem_source="tvm_memory_plan",
        export_s=0.0,
        import_s=t1 - t0,
        compile_s=compile_s,
        tune_s=report.tune_s if report else 0.0,
        tuned_trials=report.trials if report else 0,
        tune_db_hits=report.hits if report else 0,
        tune_db_misses=report.misses if report else 0,
        tuned_share=tuned_share,
        deploy_precision=precision,
        int8_ops=census.int8,
        compute_ops=census.total,
        int8_path=census.int8_path if precision == "int8" else "",
    )

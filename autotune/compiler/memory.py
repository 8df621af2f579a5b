"""IR memory analysis: what a compiled model holds in weights and what the VM allocates while it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

__all__ = ["const_bytes", "dtype_bytes", "planned_bytes"]


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a TVM dtype string (``float32`` → 4, ``int8`` → 1; at least 1)."""
    digits = "".join(c for c in dtype if c.isdigit())
    return max(1, int(digits or 32) // 8)


def planned_bytes(mod: tvm.IRModule) -> int:
    """Sum the storage the VM allocates in ``main`` after static memory planning (a lowered module)."""
    import tvm
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            name = expr.op.name
            if name in ("relax.memory.alloc_storage", "relax.vm.alloc_storage") and expr.args:
                shape = expr.args[0]
                if isinstance(shape, relax.ShapeExpr):
                    total += int(shape.values[0])
            elif name == "relax.builtin.alloc_tensor" and expr.args:
                shape, dtype = expr.args[0], expr.args[1]
                if isinstance(shape, relax.ShapeExpr):
                    n = 1
                    for v in shape.values:
                        n *= int(v)
                    total += n * dtype_bytes(str(dtype.value) if hasattr(dtype, "value") else "float32")

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def const_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constants (the weights) bound in ``main``."""
    import tvm
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, tvm.ir.expr.GenericConst) and hasattr(expr.value, "numpy"):  # not a dtype argument
            total += int(expr.value.numpy().nbytes)

    relax.analysis.post_order_visit(mod["main"], visit)
    return total

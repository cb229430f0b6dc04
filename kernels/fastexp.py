"""exp for the numba kernels that LLVM can vectorise.

numba calls libm's scalar exp, one call per score, unless Intel's SVML is installed; that
alone took about half of the kernel's time. For float32 this is the Cephes expf scheme
(range reduction by ln 2, degree-5 polynomial, 2^n built in the exponent bits), about
2 ulp, all plain arithmetic. float64 (gradcheck) keeps the exact libm exp."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

_LOG2E = np.float32(1.44269504088896341)
_C1, _C2 = np.float32(0.693359375), np.float32(-2.12194440e-4)
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_LO, _HI, _HALF, _ONE = np.float32(-87.3), np.float32(88.3), np.float32(0.5), np.float32(1.0)


@intrinsic
def _pow2_f32(typingctx, n):
    """2.0f ** n for integer n in [-126, 127]: n + 127 placed in the float32 exponent bits."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        val = args[0]
        if val.type.width > 32:
            val = builder.trunc(val, i32)
        elif val.type.width < 32:
            val = builder.sext(val, i32)
        bits = builder.shl(builder.add(val, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(n), codegen


def fexp(x):
    """exp(x); numba-only (overloaded below)."""
    return np.exp(x)


@overload(fexp, inline="always")
def _fexp(x):
    if x == types.float32:
        def impl(x):
            x = min(max(x, _LO), _HI)
            n = np.floor(x * _LOG2E + _HALF)
            r = x - n * _C1 - n * _C2
            y = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
            y = y * (r * r) + r + _ONE
            return y * _pow2_f32(np.int32(n))
        return impl
    return lambda x: np.exp(x)

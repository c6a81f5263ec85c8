"""Explicit SIMD vectors for the compiled kernels: a few lanes of float64 (or float32) as one value.

Numba has no vector type. The kernels that run several replicas at once, one per lane (the
lane-blocked SGD step of ``models.simple``), need one: written with scalar loops over the lanes, LLVM
left them scalar, because it cannot prove that the step's small scratch arrays do not alias the
parameters, and its loop vectoriser only versions loops far longer than four lanes. A ``Vector``
value is an LLVM ``<lanes x float>``, and its operations are LLVM's vector instructions.

Every operation is the IEEE operation of the scalar code lane by lane (``+ - * /``, no fused
multiply-add, no reassociation), so a kernel written with vectors computes bit for bit what its
scalar form computes, in any order of its lanes. ``lane_sums`` adds four lanes as
``(v0 + v1) + (v2 + v3)``, the order of the scalar four-accumulator sums.

    v = load(array, i)          # array[i : i + lanes] (1-D, contiguous; no bounds check)
    w = load_wide(array, i)     # twice the lanes
    store(array, i, v)          # as many lanes as v has
    zeros(array), splat(x, like), with_lane(v, k, x), lane(v, k), lane_count(array)
    v + w, v - w, v * w, v / w  # lane by lane; both vectors of one type
    minimum(v, w), maximum(v, w), absolute(v), negative(v)
    where_nonnegative(c, v, w), where_positive(c, v, w)
    widen(v)                    # float32 lanes to float64 (exact)
    lane_sums(v)                # (v0 + v1) + (v2 + v3)

LANES gives the lanes per dtype: four float64 (one AVX2 register) or eight float32.
"""
import operator

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models, register_default
from numba.core.imputils import lower_builtin
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import intrinsic

LANES = {np.dtype(np.float64): 4, np.dtype(np.float32): 8}
_LANES_OF = {types.float64: 4, types.float32: 8}


class Vector(types.Type):
    """``lanes`` values of the float type ``dtype`` held as one LLVM vector."""

    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Vector({dtype}, {lanes})")


@register_default(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _vector_of(array_type):
    return Vector(array_type.dtype, _LANES_OF[array_type.dtype])


def _pointer(context, builder, array_type, array, index, vector_type):
    arr = context.make_array(array_type)(context, builder, array)
    item = cgutils.get_item_pointer(context, builder, array_type, arr, [index], wraparound=False)
    return builder.bitcast(item, context.get_value_type(vector_type).as_pointer())


def _check_array(array):
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype in _LANES_OF):
        raise TypeError(f"simd: a 1-D float64 or float32 array is needed, got {array}")


@intrinsic
def load(typingctx, array, index):
    """array[index : index + lanes] as a vector (unaligned load)."""
    _check_array(array)
    vector = _vector_of(array)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], vector)
        return builder.load(ptr, align=context.get_abi_sizeof(context.get_value_type(array.dtype)))
    return signature(vector, array, index), codegen


@intrinsic
def load_wide(typingctx, array, index):
    """array[index : index + 2 lanes] as a vector of twice the usual lanes (one AVX-512 register of
    float64, or two AVX2 ones): for element-wise work whose latency needs more values in flight."""
    _check_array(array)
    vector = Vector(array.dtype, 2 * _LANES_OF[array.dtype])

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], vector)
        return builder.load(ptr, align=context.get_abi_sizeof(context.get_value_type(array.dtype)))
    return signature(vector, array, index), codegen


@intrinsic
def store(typingctx, array, index, value):
    """array[index : index + lanes] = value (as many lanes as ``value`` has)."""
    _check_array(array)
    vector = value
    if not (isinstance(value, Vector) and value.dtype == array.dtype):
        raise TypeError(f"simd.store: a {vector} is needed for {array}, got {value}")

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], vector)
        builder.store(args[2], ptr, align=context.get_abi_sizeof(context.get_value_type(array.dtype)))
        return context.get_dummy_value()
    return signature(types.none, array, index, value), codegen


@intrinsic
def splat(typingctx, value, like):
    """A vector of the type of ``like`` with ``value`` (converted to its dtype) in every lane."""
    if not isinstance(like, Vector):
        raise TypeError("simd.splat: the second argument must be a vector")

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], like.dtype)
        vec_type = context.get_value_type(like)
        vec = builder.insert_element(ir.Constant(vec_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), like.lanes), [0] * like.lanes)
        return builder.shuffle_vector(vec, ir.Constant(vec_type, ir.Undefined), zeros)
    return signature(like, value, like), codegen


@intrinsic
def lane(typingctx, vector, k):
    """The value in lane ``k`` of ``vector``."""
    if not isinstance(vector, Vector):
        raise TypeError("simd.lane: a vector is needed")

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.int32)
        return builder.extract_element(args[0], index)
    return signature(vector.dtype, vector, k), codegen


@intrinsic
def lane_sums(typingctx, vector):
    """(v0 + v1) + (v2 + v3) of a four-lane vector: the scalar code's order for four accumulators."""
    if not (isinstance(vector, Vector) and vector.lanes == 4):
        raise TypeError("simd.lane_sums: a four-lane vector is needed")

    def codegen(context, builder, sig, args):
        v = args[0]
        get = [builder.extract_element(v, ir.Constant(ir.IntType(32), k)) for k in range(4)]
        return builder.fadd(builder.fadd(get[0], get[1]), builder.fadd(get[2], get[3]))
    return signature(vector.dtype, vector), codegen


def _ordered_choice(name, predicate, doc):
    """The intrinsic ``name(a, b)``: lane by lane b where ``b predicate a`` (an ordered comparison, false
    for NaN), else a."""
    def typer(typingctx, a, b):
        if not (isinstance(a, Vector) and a == b):
            raise TypeError(f"simd.{name}: two vectors of one type are needed")

        def codegen(context, builder, sig, args):
            x, y = args
            return builder.select(builder.fcmp_ordered(predicate, y, x), y, x)
        return signature(a, a, b), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _sign_choice(name, predicate, doc):
    """The intrinsic ``name(condition, a, b)``: lane by lane a where ``condition predicate 0`` (ordered,
    false for a NaN condition, as in scalar code), else b."""
    def typer(typingctx, condition, a, b):
        if not (isinstance(a, Vector) and a == b and condition == a):
            raise TypeError(f"simd.{name}: three vectors of one type are needed")

        def codegen(context, builder, sig, args):
            c, x, y = args
            return builder.select(builder.fcmp_ordered(predicate, c, ir.Constant(c.type, None)), x, y)
        return signature(a, condition, a, b), codegen
    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


minimum = _ordered_choice("minimum", "<", "Lane by lane ``min(a, b)`` with Python's (and Numba's) rule: b where "
                                          "b < a, else a (a NaN in a stays).")
maximum = _ordered_choice("maximum", ">", "Lane by lane ``max(a, b)`` with Python's (and Numba's) rule: b where "
                                          "b > a, else a (a NaN in a stays).")
where_nonnegative = _sign_choice("where_nonnegative", ">=", "Lane by lane ``a if condition >= 0 else b``.")
where_positive = _sign_choice("where_positive", ">", "Lane by lane ``a if condition > 0 else b``.")


@intrinsic
def absolute(typingctx, a):
    """|a| lane by lane (the sign bit cleared, as ``abs`` of a float)."""
    if not isinstance(a, Vector):
        raise TypeError("simd.absolute: a vector is needed")

    def codegen(context, builder, sig, args):
        vec_type = args[0].type
        suffix = f"v{vec_type.count}{vec_type.element.intrinsic_name}"  # llvmlite names no vector intrinsics itself
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec_type, [vec_type]),
                                              f"llvm.fabs.{suffix}")
        return builder.call(fabs, [args[0]])
    return signature(a, a), codegen


@intrinsic
def negative(typingctx, a):
    """-a lane by lane."""
    if not isinstance(a, Vector):
        raise TypeError("simd.negative: a vector is needed")

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])
    return signature(a, a), codegen


_OPERATIONS = {operator.add: "fadd", operator.sub: "fsub", operator.mul: "fmul", operator.truediv: "fdiv"}


def _register_operator(op, instruction):
    @infer_global(op)
    class _Typing(AbstractTemplate):
        def generic(self, args, kws):
            if len(args) == 2 and isinstance(args[0], Vector) and args[0] == args[1]:
                return signature(args[0], *args)

    @lower_builtin(op, Vector, Vector)
    def _lower(context, builder, sig, args):
        return getattr(builder, instruction)(args[0], args[1])


for _op, _instruction in _OPERATIONS.items():
    _register_operator(_op, _instruction)


@intrinsic
def zeros(typingctx, array):
    """A vector of zeros of the dtype of ``array`` (a 1-D float64 or float32 array)."""
    _check_array(array)
    vector = _vector_of(array)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vector), None)
    return signature(vector, array), codegen


@intrinsic
def with_lane(typingctx, vector, k, value):
    """``vector`` with lane ``k`` replaced by ``value`` (converted to its dtype)."""
    if not isinstance(vector, Vector):
        raise TypeError("simd.with_lane: a vector is needed")

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.int32)
        scalar = context.cast(builder, args[2], sig.args[2], vector.dtype)
        return builder.insert_element(args[0], scalar, index)
    return signature(vector, vector, k, value), codegen


@intrinsic
def widen(typingctx, vector):
    """The lanes of ``vector`` as float64 (exact; the same vector for float64)."""
    if not isinstance(vector, Vector):
        raise TypeError("simd.widen: a vector is needed")
    wide = Vector(types.float64, vector.lanes)

    def codegen(context, builder, sig, args):
        if vector.dtype == types.float64:
            return args[0]
        return builder.fpext(args[0], context.get_value_type(wide))
    return signature(wide, vector), codegen


@intrinsic
def lane_count(typingctx, array):
    """The lanes of a vector of the dtype of ``array`` (a compile-time constant)."""
    _check_array(array)
    lanes = _LANES_OF[array.dtype]

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), lanes)
    return signature(types.int64, array), codegen


"""Ops that move channels between axes without arithmetic.

Concat, Split and Slice place channels at offsets along an axis; Transpose permutes axes;
Squeeze/Unsqueeze drop or add unit axes; Flatten and Reshape merge and split axes:

1. When axes merge (``[N,C,H,W] -> [N, C*H*W]``), one of them owns the output: each channel a
   block of ``H*W`` features (flatten into a classifier). Which one is a ``Choice`` the analysis
   settles: the axis whose channels are free, so NHWC (``[N,H,W,C]``) works as well as NCHW.
2. An input axis that splits in two (``[B,S,H*D] -> [B,S,H,D]``, ``[N,C,H,W] -> [N,g,C/g,H,W]``)
   is a ``SplitChoice``: ``c -> c // D`` keeps whole blocks (attention heads) together,
   ``c -> c % D`` channels that share an offset in every block (what a channel shuffle,
   Reshape -> Transpose -> Reshape, needs to stay dense). The analysis settles it together with
   the merges the blocks reach. A split into more axes couples to the last, ``c -> c % D``.
3. Reshape targets are rewritten entry by entry; an entry computed at run time blocks its axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import (
    Choice,
    Coupling,
    PlanView,
    Rule,
    SplitChoice,
    attr,
    identity,
    known_array,
    mapped,
    normalize_axis,
    opset_of,
    private_producer,
    replace_constant_input,
    static_shape,
    symbolic_shape,
)
from graphprune.ops.registry import register
from graphprune.ops.shape_of import dim_sources

Shape = tuple[int | None, ...]


def _shapes(rule: Rule, node: ir.Node) -> tuple[Shape, Shape] | Blocked:
    xs, ys = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if xs is None or ys is None:
        return rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "shapes unknown")
    return xs, ys


def _pieces_along(rule: Rule, node: ir.Node, whole: ir.Value, parts, axis: int):
    """Part ``k`` is elements ``[off_k, off_k + n_k)`` of ``whole`` on ``axis``; other axes match.

    When a part's size along ``axis`` is symbolic (a spatial concat with a dynamic height, say),
    the offsets are unknown: the other axes are still coupled, and ``axis`` itself stays whole.
    """
    rank = len(static_shape(whole))
    shapes = [static_shape(part) for part in parts]
    if any(shape is None or len(shape) != rank for shape in shapes):
        return rule.blocked(node, BlockReason.UNKNOWN_SHAPE, "part shapes unknown")
    found = [identity((part, a), (whole, a)) for part in parts for a in range(rank) if a != axis]
    if any(shape[axis] is None for shape in shapes):
        return found
    offset = 0
    for part, shape in zip(parts, shapes, strict=False):
        n = np.arange(shape[axis])
        found.append(mapped((part, axis), (whole, axis), n, offset + n))
        offset += len(n)
    return found


@register
class ConcatRule(Rule):
    """``Y = concat(X_0, X_1, ...)`` along ``axis``: input k occupies ``[off_k, off_k + n_k)``."""

    op_types = ("Concat",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        y = node.outputs[0]
        ys = static_shape(y)
        if ys is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "output rank unknown")
        axis = normalize_axis(attr(node, "axis"), len(ys))
        return _pieces_along(self, node, y, node.inputs, axis)


@register
class SplitRule(Rule):
    """``Y_0, Y_1, ... = split(X)`` along ``axis``; sizes are rewritten to the kept counts."""

    op_types = ("Split",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x = node.inputs[0]
        xs = static_shape(x)
        if xs is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        axis = normalize_axis(attr(node, "axis", 0), len(xs))
        return _pieces_along(self, node, x, node.outputs, axis)

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        axis = normalize_axis(attr(node, "axis", 0), len(static_shape(node.inputs[0])))
        if plan.kept(node.inputs[0], axis) is None:
            return
        sizes = np.array([plan.new_size(y, axis) for y in node.outputs], dtype=np.int64)
        if opset_of(node) < 13:
            node.attributes["split"] = ir.AttrInt64s("split", [int(s) for s in sizes])
            return
        node.attributes.pop("num_outputs", None)
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            replace_constant_input(node, 1, sizes)
            return
        name = f"{node.name or 'split'}_sizes"
        value = ir.Value(name=name, const_value=ir.Tensor(sizes, name=name))
        value.shape, value.dtype = ir.Shape(sizes.shape), ir.DataType.INT64
        node.graph.register_initializer(value)
        node.resize_inputs(2)
        node.replace_input_with(1, value)


@register
class SliceRule(Rule):
    """``Y = X[start:end]`` on some axes (step 1): output ``i`` is input ``start + i``."""

    op_types = ("Slice",)

    def _params(self, node: ir.Node, rank: int) -> dict[int, tuple[int, int, int]] | None:
        if opset_of(node) < 10:
            starts, ends = attr(node, "starts"), attr(node, "ends")
            axes, steps = attr(node, "axes"), None
        else:
            arrays = [known_array(v) if v is not None else None for v in node.inputs[1:5]]
            arrays += [None] * (4 - len(arrays))
            if any(a is None and k < len(node.inputs) - 1 and node.inputs[k + 1] is not None
                   for k, a in enumerate(arrays)):
                return None
            starts, ends, axes, steps = arrays
        if starts is None or ends is None:
            return None
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        return {
            normalize_axis(int(a), rank): (int(s), int(e), int(t))
            for a, s, e, t in zip(axes, np.ravel(starts), np.ravel(ends), np.ravel(steps),
                                  strict=False)
        }

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        shapes = _shapes(self, node)
        if isinstance(shapes, Blocked):
            return shapes
        xs, ys = shapes
        x, y = node.inputs[0], node.outputs[0]
        params = self._params(node, len(xs))
        if params is None:
            sliced = self._constant_axes(node, len(xs))
            if sliced is None:
                detail = "slice bounds not constant"
                return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, detail)
            # bounds computed at run time (a crop to another tensor's size): the other axes pass
            return [identity((x, a), (y, a)) for a in range(len(xs)) if a not in sliced]
        found = []
        for axis in range(len(xs)):
            if axis not in params:
                found.append(identity((x, axis), (y, axis)))
                continue
            start, end, step = params[axis]
            if step != 1 or xs[axis] is None:
                continue
            start = min(max(start + xs[axis] if start < 0 else start, 0), xs[axis])
            end = min(max(end + xs[axis] if end < 0 else end, 0), xs[axis])
            n = max(0, end - start)
            if ys[axis] not in (None, n):
                continue
            found.append(mapped((x, axis), (y, axis), start + np.arange(n), np.arange(n)))
        return found

    @staticmethod
    def _constant_axes(node: ir.Node, rank: int) -> set[int] | None:
        """The sliced axes when ``axes`` is constant (opset >= 10) though the bounds are not."""
        if opset_of(node) < 10 or len(node.inputs) < 4 or node.inputs[3] is None:
            return None
        axes = known_array(node.inputs[3])
        return None if axes is None else {normalize_axis(int(a), rank) for a in np.ravel(axes)}

    def refine_shapes(self, node: ir.Node) -> bool:
        """Axes a Slice with run-time bounds does not slice keep the input's dims."""
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = symbolic_shape(x), symbolic_shape(y)
        sliced = None if xs is None else self._constant_axes(node, len(xs))
        if sliced is None or (ys is not None and len(ys) != len(xs)):
            return False
        ys = ys or (None,) * len(xs)
        dims = [xs[a] if a not in sliced and xs[a] is not None else ys[a] for a in range(len(xs))]
        if tuple(dims) == ys:
            return False
        y.shape = ir.Shape(dims)
        return True

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        x, y = node.inputs[0], node.outputs[0]
        xs = static_shape(x)
        params = self._params(node, len(xs))
        if params is None:
            return  # run-time bounds: only unsliced axes were coupled, nothing to restate
        changed = {}
        for axis, (start, _, _) in params.items():
            kept = plan.kept(x, axis)
            if kept is None:
                continue
            start = min(max(start + xs[axis] if start < 0 else start, 0), xs[axis])
            new_start = int(np.searchsorted(kept, start))
            changed[axis] = (new_start, new_start + plan.new_size(y, axis))
        if not changed:
            return
        axes = list(params)
        starts = np.array([changed.get(a, params[a][:2])[0] for a in axes], dtype=np.int64)
        ends = np.array([changed.get(a, params[a][:2])[1] for a in axes], dtype=np.int64)
        if opset_of(node) < 10:
            node.attributes["starts"] = ir.AttrInt64s("starts", starts.tolist())
            node.attributes["ends"] = ir.AttrInt64s("ends", ends.tolist())
        else:
            replace_constant_input(node, 1, starts)
            replace_constant_input(node, 2, ends)


@register
class TransposeRule(Rule):
    """``Y = transpose(X, perm)``: output axis ``k`` is input axis ``perm[k]``."""

    op_types = ("Transpose",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        x, y = node.inputs[0], node.outputs[0]
        xs = static_shape(x)
        if xs is None:
            return self.blocked(node, BlockReason.UNKNOWN_SHAPE, "input rank unknown")
        perm = attr(node, "perm") or list(reversed(range(len(xs))))
        return [identity((x, int(p)), (y, k)) for k, p in enumerate(perm)]


@register
class SqueezeRule(Rule):
    """Squeeze/Unsqueeze: the axes that are neither removed nor inserted keep their order."""

    op_types = ("Squeeze", "Unsqueeze")

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        shapes = _shapes(self, node)
        if isinstance(shapes, Blocked):
            return shapes
        xs, ys = shapes
        x, y = node.inputs[0], node.outputs[0]
        axes = attr(node, "axes")
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            axes = known_array(node.inputs[1])
            if axes is None:
                return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "axes not constant")
        if node.op_type == "Squeeze":
            rank, changed = len(xs), axes
            if changed is None:
                changed = [a for a, d in enumerate(xs) if d == 1]
        else:
            rank, changed = len(ys), axes
        changed = {normalize_axis(int(a), rank) for a in np.ravel(changed)}
        kept = [a for a in range(rank) if a not in changed]
        pairs = zip(kept, range(len(kept)), strict=False)
        if node.op_type == "Squeeze":
            return [identity((x, a), (y, b)) for a, b in pairs]
        return [identity((x, b), (y, a)) for a, b in pairs]


def _span_couplings(x: ir.Value, xs: Shape, x_axes, y: ir.Value, ys: Shape, y_axes):
    """Couples a run of input axes to a run of output axes holding the same elements."""
    x_axes = [a for a in x_axes if xs[a] != 1]
    y_axes = [a for a in y_axes if ys[a] != 1]
    if not x_axes or not y_axes:
        return []
    if len(x_axes) == 1 and len(y_axes) == 1:
        return [identity((x, x_axes[0]), (y, y_axes[0]))]
    sizes_x, sizes_y = [xs[a] for a in x_axes], [ys[a] for a in y_axes]
    if None in sizes_x or None in sizes_y:
        return []
    if len(y_axes) == 1:  # merge: one input axis (the analysis chooses which) owns blocks
        e = np.arange(sizes_y[0])
        options = []
        for k, axis in enumerate(x_axes):
            stride = int(np.prod(sizes_x[k + 1 :], dtype=np.int64))
            options.append(mapped((x, axis), (y, y_axes[0]), (e // stride) % sizes_x[k], e))
        return [Choice(tuple(options))]
    if len(x_axes) == 1 and len(y_axes) == 2:  # split: whole blocks or the same offset in each
        c, minor = np.arange(sizes_x[0]), sizes_y[1]
        major = mapped((x, x_axes[0]), (y, y_axes[0]), c, c // minor)
        return [SplitChoice(dataclasses.replace(major, blocks=True),
                            mapped((x, x_axes[0]), (y, y_axes[1]), c, c % minor))]
    if len(x_axes) == 1:  # a split into more axes: coupled to the last (minor) output axis
        c = np.arange(sizes_x[0])
        return [mapped((x, x_axes[0]), (y, y_axes[-1]), c, c % sizes_y[-1])]
    return []


def _axis_runs(xs: Shape, ys: Shape) -> list[tuple[list[int], list[int]]]:
    """Pairs runs of input and output axes with equal products (unit axes skipped)."""
    ins = [a for a, d in enumerate(xs) if d != 1]
    outs = [a for a, d in enumerate(ys) if d != 1]
    runs, i, j = [], 0, 0
    while i < len(ins) and j < len(outs):
        dx, dy = xs[ins[i]], ys[outs[j]]
        if dx is None or dy is None:
            if dx is None and dy is None:
                runs.append(([ins[i]], [outs[j]]))
                i, j = i + 1, j + 1
                continue
            break
        run_x, run_y = [ins[i]], [outs[j]]
        i, j = i + 1, j + 1
        while dx != dy:
            if dx < dy:
                if i >= len(ins) or xs[ins[i]] is None:
                    return runs
                dx *= xs[ins[i]]
                run_x.append(ins[i])
                i += 1
            else:
                if j >= len(outs) or ys[outs[j]] is None:
                    return runs
                dy *= ys[outs[j]]
                run_y.append(outs[j])
                j += 1
        runs.append((run_x, run_y))
    return runs


def _suffix_runs(sx: tuple, sy: tuple, taken_x: set[int], taken_y: set[int]):
    """Runs matched from the last axis backwards, where :func:`_axis_runs` stopped.

    The trailing axes of a reshape hold the same elements whenever their products agree,
    whatever comes before (``[b, 12, L, 32] -> [-1, L, 32]``): static runs grow as in the forward
    pass, and a symbolic dim matches the same symbol. An unnamed unknown dim ends the match.
    """
    ins = [a for a, d in enumerate(sx) if d != 1 and a not in taken_x]
    outs = [a for a, d in enumerate(sy) if d != 1 and a not in taken_y]
    runs = []
    while ins and outs:
        dx, dy = sx[ins[-1]], sy[outs[-1]]
        if isinstance(dx, str) and dx == dy:
            runs.append(([ins.pop()], [outs.pop()]))
            continue
        if not isinstance(dx, int) or not isinstance(dy, int):
            break
        run_x, run_y = [ins.pop()], [outs.pop()]
        while dx != dy:
            side, grow = (ins, run_x) if dx < dy else (outs, run_y)
            if not side or not isinstance((sx if side is ins else sy)[side[-1]], int):
                return runs
            grow.insert(0, side.pop())
            if side is ins:
                dx *= sx[run_x[0]]
            else:
                dy *= sy[run_y[0]]
        runs.append((run_x, run_y))
    return runs


@register
class FlattenRule(Rule):
    """``Y[a, b] = X`` with axes ``[0, axis)`` merged into ``a`` and ``[axis, r)`` into ``b``."""

    op_types = ("Flatten",)

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        shapes = _shapes(self, node)
        if isinstance(shapes, Blocked):
            return shapes
        xs, ys = shapes
        x, y = node.inputs[0], node.outputs[0]
        split = normalize_axis(attr(node, "axis", 1), len(xs))
        return _span_couplings(x, xs, range(split), y, ys, [0]) + _span_couplings(
            x, xs, range(split, len(xs)), y, ys, [1]
        )


def shape_pieces(node: ir.Node, index: int = 1) -> list[tuple[ir.Node, int, np.ndarray | None,
                                                                int]] | None:
    """Where each entry of a shape input lives: ``(node, input index, constant, length)``.

    The shape (a Reshape target, Resize sizes) is a constant, or a Concat of 1-D pieces of which
    some are constant (the form exporters write for ``view(x.size(0), -1)``). Run-time pieces
    come back with constant None.
    """
    target = node.inputs[index]
    array = known_array(target)
    if array is not None:
        return [(node, index, array, array.size)]
    concat = target.producer()
    if concat is None or concat.op_type != "Concat":
        return None
    pieces = []
    for k, piece in enumerate(concat.inputs):
        shape = static_shape(piece)
        if shape is None or len(shape) != 1 or shape[0] is None:
            return None
        pieces.append((concat, k, known_array(piece), shape[0]))
    return pieces


def _resolve_one_unknown(xs: tuple | None, ys: tuple | None) -> Shape | None:
    """Output dims with one unknown filled in, when the other symbolic dims cancel out.

    ``[b, 16, 2, 8, 8] -> [b, ?, 8, 8]`` gives ``? = 32``: symbols on both sides cancel, and the
    one output dim without a counterpart is the ratio of the static products.
    """
    if xs is None or ys is None:
        return None
    plain = tuple(d if isinstance(d, int) else None for d in ys)
    if None in xs:
        return plain
    shared = [d for d in ys if isinstance(d, str) and d in xs]
    unknown = [k for k, d in enumerate(ys) if not isinstance(d, int) and d not in shared]
    if len(unknown) != 1 or sorted(d for d in xs if isinstance(d, str)) != sorted(shared):
        return plain
    static_x = int(np.prod([d for d in xs if isinstance(d, int)], dtype=np.int64))
    static_y = int(np.prod([d for d in ys if isinstance(d, int)], dtype=np.int64))
    if not static_y or static_x % static_y:
        return plain
    return tuple(static_x // static_y if k == unknown[0] else d for k, d in enumerate(plain))


def _dim_read_from_shape(piece: ir.Value) -> int | str | None:
    """Dim ``i`` of ``t`` read as ``Gather(Shape(t), i)`` or ``Slice(Shape(t), i, i+1)``."""
    sources = dim_sources(piece)
    if sources and len(sources) == 1 and sources[0] is not None:
        value, axis = sources[0]
        dims = symbolic_shape(value)
        return dims[axis] if dims is not None and axis < len(dims) else None
    node = piece.producer()
    if node is not None and node.op_type == "Unsqueeze":
        node = node.inputs[0].producer()
    if node is None or node.op_type != "Gather" or node.inputs[0].producer() is None:
        return None
    shape_node = node.inputs[0].producer()
    index = known_array(node.inputs[1])
    if shape_node.op_type != "Shape" or index is None or np.size(index) != 1:
        return None
    dims = symbolic_shape(shape_node.inputs[0])
    start = attr(shape_node, "start", 0)
    if dims is None:
        return None
    try:
        return dims[start:][int(np.ravel(index)[0])]
    except IndexError:
        return None


def _target_dims(node: ir.Node) -> list[int | str | None] | None:
    """The Reshape target as dims: ints, symbolic names read through ``Shape``, or None."""
    pieces = shape_pieces(node)
    if pieces is None:
        return None
    dims: list[int | str | None] = []
    for owner, index, array, length in pieces:
        if array is not None:
            dims += [int(d) for d in np.ravel(array)]
        elif length == 1:
            dims.append(_dim_read_from_shape(owner.inputs[index]))
        else:
            dims += [None] * length
    if not attr(node, "allowzero", 0):  # 0 copies the input's dim (unknown with its rank)
        xs = symbolic_shape(node.inputs[0]) or ()
        dims = [(xs[k] if k < len(xs) else None) if d == 0 else d for k, d in enumerate(dims)]
    return [None if d == -1 else d for d in dims]


@register
class ReshapeRule(Rule):
    """Reshape (opset >= 5): runs of axes with equal products are coupled (see module rules)."""

    op_types = ("Reshape",)
    since_version = 5

    def couplings(self, node: ir.Node) -> list[Coupling] | Blocked:
        shapes = _shapes(self, node)
        if isinstance(shapes, Blocked):
            return shapes
        x, y = node.inputs[0], node.outputs[0]
        xs, ys = shapes[0], _resolve_one_unknown(symbolic_shape(x), symbolic_shape(y))
        pieces = shape_pieces(node)
        if pieces is None:
            return self.blocked(node, BlockReason.DYNAMIC_SHAPE_INPUT, "target shape not constant")
        known = np.concatenate([np.ones(n, bool) if a is not None else np.zeros(n, bool)
                                for _, _, a, n in pieces])
        runs = _axis_runs(xs, ys)
        sx, sy = symbolic_shape(x), symbolic_shape(y)
        if sx is not None and sy is not None and len(sy) == len(ys):
            taken_x = {a for run, _ in runs for a in run}
            taken_y = {a for _, run in runs for a in run}
            sy = tuple(r if isinstance(r, int) else d for r, d in zip(ys, sy, strict=True))
            runs += _suffix_runs(sx, sy, taken_x, taken_y)
        found = []
        for run_x, run_y in runs:
            if all(known[a] for a in run_y):
                found += _span_couplings(x, xs, run_x, y, ys, run_y)
        return found

    def refine_shapes(self, node: ir.Node) -> bool:
        """Output dims from the target's known entries, then its one ``-1`` if symbols cancel."""
        y = node.outputs[0]
        current, target = symbolic_shape(y), _target_dims(node)
        if current is None and target is None:
            return False
        if current is None or (target is not None and len(target) != len(current)):
            dims = list(target)
        else:
            target = target or current
            pairs = zip(current, target, strict=True)
            dims = [c if isinstance(c, int) or t is None else t for c, t in pairs]
        resolved = _resolve_one_unknown(symbolic_shape(node.inputs[0]), tuple(dims))
        if resolved is not None:
            dims = [r if isinstance(r, int) else d for r, d in zip(resolved, dims, strict=False)]
        if current is not None and tuple(dims) == current:
            return False
        y.shape = ir.Shape(dims)
        return True

    def rewrite(self, node: ir.Node, plan: PlanView) -> None:
        x, y = node.inputs[0], node.outputs[0]
        ys = _resolve_one_unknown(symbolic_shape(x), symbolic_shape(y)) or static_shape(y)
        offset = 0
        for owner, index, array, length in shape_pieces(node):
            if array is None:
                offset += length
                continue
            new = np.array(array, dtype=np.int64).copy()
            for k in range(length):
                axis = offset + k
                new_out = plan.new_size(y, axis)
                if new[k] == -1 or new_out is None or new_out == ys[axis]:
                    continue  # -1 is computed; an unknown or unchanged size stays as it is
                copies_input = new[k] == 0 and not attr(node, "allowzero", 0)
                if not copies_input or plan.new_size(x, axis) != new_out:
                    new[k] = new_out  # (a 0 still right when it copies the pruned input dim)
            if not np.array_equal(new, array):
                if owner is not node:  # a Concat-built target: edit this Reshape's own copy
                    owner = private_producer(node, 1)
                replace_constant_input(owner, index, new.astype(array.dtype))
            offset += length

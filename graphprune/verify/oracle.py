"""The mask-equivalence oracle.

For a plan that removes channels, the *masked* original sets every removed parameter entry to
zero (a divisor to one, so that a zeroed channel stays finite; a quantized weight to its zero
point, and scales and zero points unchanged, as the op rules' ``masked_values`` say). The pruned
model must compute what
the masked original computes: ``|pruned - masked| <= rtol * max|masked|`` on every output. Where
the original's outputs are known, the scale is ``max(max|masked|, max|original|)``: float error
grows with the terms summed, not with their sum, so a masked output that cancels to almost zero
(1e-8 where the original's is 1e-2) is judged at the original's scale.

Tolerances (``rtol``) by output, as the CLI applies them:

- float32/float64 outputs: ``1e-4`` (float reassociation: a pruned sum adds fewer zero terms and
  may be blocked differently);
- float16/bfloat16 outputs: ``1e-2`` (an 11-bit mantissa: ``eps`` is about ``1e-3`` per rounding);
- float outputs of a quantized model (QuantizeLinear, DynamicQuantizeLinear, QLinear*, *Integer):
  ``1e-2``, since an ulp of difference before a quantizer can flip one integer step;
- integer and bool outputs: one unit of the output (an off-by-one rounding). Indices chosen
  among near-ties (ArgMax, TopK) may still flip by more; ``--no-oracle`` skips the check.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from graphprune._io import PROTOBUF_LIMIT, has_external_data, tensor_bytes
from graphprune.errors import VerificationError
from graphprune.ops import lookup
from graphprune.ops.base import constant_array, is_constant
from graphprune.verify.resized_io import Cuts, sliced_feeds, sliced_outputs

Masks = Mapping[str, Sequence[tuple[int, np.ndarray]]]  # name -> (axis, kept indices)
RTOL = 1e-4
RTOL_LOW_PRECISION = 1e-2
_LOW_PRECISION = (np.float16,)


Fills = dict[str, "np.ndarray | None"]


def _nodes(graph: ir.Graph):
    return ir.traversal.RecursiveGraphIterator(graph)


def _values_by_name(model: ir.Model) -> dict[str, ir.Value]:
    values = dict(model.graph.initializers)
    for node in _nodes(model.graph):
        for output in node.outputs:
            values.setdefault(output.name, output)
    return values


def _divisor_names(model: ir.Model) -> set[str]:
    return {n.inputs[1].name for n in _nodes(model.graph)
            if n.op_type == "Div" and len(n.inputs) > 1 and n.inputs[1] is not None}


def _masked_array(array: np.ndarray, cuts, fill, copy: bool = True) -> np.ndarray:
    """``array`` with the entries outside ``cuts`` set to ``fill`` (broadcast to the array).

    ``copy=False`` masks a writable ``array`` in place.
    """
    array = np.array(array, copy=True) if copy else array
    fill = np.asarray(fill, array.dtype)
    for axis, kept in cuts:
        drop = np.ones(array.shape[axis], bool)
        drop[np.asarray(kept, np.int64)] = False
        index = (slice(None),) * axis + (drop,)
        array[index] = fill if fill.ndim == 0 else np.broadcast_to(fill, array.shape)[index]
    return array


def _lazy(tensor, cuts, fill, name: str) -> ir.LazyTensor:
    """The masked tensor, built when it is written (one tensor in memory at a time)."""
    return ir.LazyTensor(lambda: ir.tensor(_masked_array(tensor.numpy(), cuts, fill), name=name),
                         dtype=tensor.dtype, shape=tensor.shape, name=name)


def _set_node_constant(value: ir.Value, array: np.ndarray) -> None:
    """A ``Constant`` node's new value; the shape is unchanged, so ``value`` is left alone."""
    node = value.producer()
    for name in [n for n in node.attributes if n.startswith("value")]:
        del node.attributes[name]
    node.attributes["value"] = ir.AttrTensor("value", ir.tensor(array, name=value.name))


def apply_masks(model: ir.Model, masks: Masks, fills: Fills | None = None) -> ir.Model:
    """Sets, in ``model``, every entry outside the kept indices to 0 (1 for divisors).

    ``fills`` (from :func:`mask_fills` of ``model`` when None) overrides the 0 per constant, or
    leaves a constant unchanged (None). Initializers are masked lazily (when written or read);
    ``Constant`` nodes at once.
    """
    values = _values_by_name(model)
    divisors = _divisor_names(model)
    fills = mask_fills(model) if fills is None else fills
    for name, cuts in masks.items():
        value = values.get(name)
        fill = fills.get(name, 1 if name in divisors else 0)
        if fill is None:
            continue
        if value is not None and value.const_value is not None and not value.is_graph_input():
            value.const_value = _lazy(value.const_value, list(cuts), fill, name)
            continue
        array = constant_array(value) if value is not None else None
        if array is None:
            raise VerificationError(f"oracle: no constant '{name}' in the input model to mask")
        _set_node_constant(value, _masked_array(array, cuts, fill))
    return model


def mask_fills(model: ir.Model) -> Fills:
    """Constant name -> what its removed entries become when not 0 (None: left unchanged)."""
    fills: Fills = {}
    for node in model.graph:
        rule = lookup(node)
        for index, fill in (rule.masked_values(node) if rule is not None else {}).items():
            value = node.inputs[index] if index < len(node.inputs) else None
            if is_constant(value):
                fills[value.name] = fill
    return fills


def fills_for(model: ir.Model, masks: Masks) -> Fills:
    """What the removed entries of each constant in ``masks`` become in the masked original.

    0, 1 for a divisor, what an op rule's ``masked_values`` says, or None (left unchanged).
    Read off the original before it is rewritten (``PruneResult.fills``), so the oracle need
    not load the input model again.
    """
    rules = mask_fills(model)
    divisors = _divisor_names(model)
    return {name: rules.get(name, 1 if name in divisors else 0) for name in masks}


def masked_model(original: onnx.ModelProto, masks: Masks,
                 fills: Fills | None = None) -> onnx.ModelProto:
    """A masked copy of ``original`` (which is left as it is); see :func:`apply_masks`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(original)
    return ir.to_proto(apply_masks(ir.from_proto(copy), masks, fills))


def write_masked(source: Path, masks: Masks, dest: Path, fills: Fills | None = None) -> Path:
    """Writes the masked model at ``source`` to ``dest`` (weights stay mapped until written)."""
    model = apply_masks(ir.load(source), masks, fills)
    external = has_external_data(model) or tensor_bytes(model) > PROTOBUF_LIMIT
    ir.save(model, dest, external_data=f"{dest.name}.data" if external else None)
    return dest


def session_options(optimized: bool = False):
    """Session options of the checks: no optimizations (unless asked), prepacking or spinning.

    Prepacking copies every MatMul weight into onnxruntime's own layout: for a model with
    external data (which onnxruntime maps) that doubles the resident memory, and a check runs
    each model on two batches only. Idle worker threads that spin burn a core between the small
    nodes of a check (a 100k-node model's segmented run: 6.8 s of CPU spinning, 4.6 s not, in
    the same 4.5 s).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # failures come back as exceptions, not log lines
    return options


def session(model: onnx.ModelProto | str | Path, optimized: bool = False):
    """An onnxruntime CPU session with every graph optimization off (exact arithmetic).

    ``optimized`` turns onnxruntime's optimizations on (fusions reorder the arithmetic), to
    measure how far a model's outputs move from rounding alone (:func:`float_noise`).
    """
    import onnxruntime as ort

    options = session_options(optimized)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Runs ``model`` (a proto or a path) on CPU with all graph optimizations off."""
    return session(model).run(None, dict(feeds))


def output_error(reference: np.ndarray, actual: np.ndarray, scale: float = 0.0) -> float:
    """``max|a - r| / max(max|r|, scale)`` over the places where both are finite.

    Infinite when the shapes or the non-finite places differ.
    """
    reference, actual = np.asarray(reference), np.asarray(actual)
    if reference.shape != actual.shape or reference.dtype.kind in "OSU":
        return 0.0 if reference.shape == actual.shape and np.array_equal(reference, actual) \
            else float("inf")
    r, a = reference.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(r)
    if not np.array_equal(finite, np.isfinite(a)) or not np.array_equal(r[~finite], a[~finite]):
        return float("inf")
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(r[finite]))), scale, 1e-12)
    return float(np.max(np.abs(a[finite] - r[finite]))) / scale


def relative_error(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """Largest :func:`output_error` over the outputs."""
    if len(reference) != len(actual):
        return float("inf")
    return max((output_error(r, a) for r, a in zip(reference, actual, strict=True)), default=0.0)


def tolerance(reference: np.ndarray, quantized: bool = False) -> float:
    """The relative tolerance of one output (see the module docstring)."""
    reference = np.asarray(reference)
    if reference.dtype == np.bool_ or np.issubdtype(reference.dtype, np.integer):
        scale = float(np.max(np.abs(reference))) if reference.size else 1.0
        return max(RTOL, 1.0 / max(scale, 1.0))
    if reference.dtype in _LOW_PRECISION or reference.dtype.kind == "V" or quantized:
        return RTOL_LOW_PRECISION
    return RTOL


def is_quantized(path: Path) -> bool:
    """Whether the model quantizes activations (see the module docstring)."""
    proto = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    return any("Quantize" in op or op.startswith("QLinear") or op.endswith("Integer") for op in ops)


@dataclasses.dataclass(frozen=True)
class OracleResult:
    """The oracle's verdict: the worst output's relative error against its tolerance."""

    relative_error: float
    tolerance: float
    batches: int
    outputs: dict[str, dict]
    noise: float | None = None  # the masked original's own float noise, when it was measured

    @property
    def passed(self) -> bool:
        floor = NOISE_FACTOR * self.noise if self.noise is not None else 0.0
        return self.relative_error <= max(self.tolerance, floor)

    def as_dict(self) -> dict:
        return {"relative_error": self.relative_error, "tolerance": self.tolerance,
                "float_noise": self.noise, "passed": self.passed, "batches": self.batches,
                "outputs": self.outputs}


NOISE_FACTOR = 4  # an error within 4x the model's own rounding noise is rounding, not a rewrite


def float_noise(model: onnx.ModelProto | str | Path, feeds: Sequence[Mapping],
                reference: Sequence[list[np.ndarray]]) -> float:
    """How far ``model``'s outputs move when onnxruntime may reorder its arithmetic.

    Some real models amplify rounding (deep, saturating, normalizing): their outputs move by more
    than the oracle's tolerance between optimization levels. A wrong rewrite moves them by O(1).
    """
    optimized = session(model, optimized=True)
    return max(relative_error(r, optimized.run(None, dict(f)))
               for f, r in zip(feeds, reference, strict=True))


def _scale(array) -> float:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf" or not array.size:
        return 0.0
    finite = np.abs(array[np.isfinite(array)].astype(np.float64))
    return float(finite.max()) if finite.size else 0.0


def compare(names: Sequence[str], masked: Sequence[list[np.ndarray]],
            pruned: Sequence[list[np.ndarray]], quantized: bool = False,
            original: Sequence[list[np.ndarray]] | None = None) -> OracleResult:
    """Per-output errors over every batch; the worst is the one furthest over its tolerance.

    ``original`` (the input model's outputs on the same batches) sets the least scale.
    """
    outputs = {}
    scales = original or [[None] * len(names) for _ in masked]
    for k, name in enumerate(names):
        error = max(output_error(m[k], p[k], _scale(o[k]) if o[k] is not None else 0.0)
                    for m, p, o in zip(masked, pruned, scales, strict=True))
        tol = min(tolerance(m[k], quantized) for m in masked)
        outputs[name] = {"relative_error": error, "tolerance": tol,
                         "dtype": str(np.asarray(masked[0][k]).dtype)}
    worst = max(outputs.values(), key=lambda o: o["relative_error"] / o["tolerance"],
                default={"relative_error": 0.0, "tolerance": RTOL})
    return OracleResult(worst["relative_error"], worst["tolerance"], len(masked), outputs)


def check_oracle(source: Path, pruned: Path, masks: Masks, feeds: Sequence[Mapping],
                 pruned_outputs: Sequence[list[np.ndarray]] | None = None,
                 original_outputs: Sequence[list[np.ndarray]] | None = None,
                 io: Cuts | None = None, fills: Fills | None = None) -> OracleResult:
    """Runs the masked original and the pruned model on ``feeds``; VerificationError if apart.

    Args:
        source: The original model file.
        pruned: The pruned model file.
        masks: ``PruneResult.masks``.
        feeds: The batches (one or two are enough).
        pruned_outputs: The pruned model's outputs on ``feeds`` if already computed.
        original_outputs: The input model's outputs on ``feeds``, if known (see ``compare``),
            sliced like the pruned model's when ``io`` is given.
        io: ``PruneResult.io``: resized inputs fed sliced to the pruned model, resized outputs of
            the masked original sliced before comparing.
        fills: ``PruneResult.fills`` (:func:`fills_for`; read from ``source`` when None).
    """
    with tempfile.TemporaryDirectory(prefix=".graphprune-oracle-", dir=pruned.parent) as folder:
        names, full, noise_of = _masked_outputs(source, masks, feeds, Path(folder), fills)
        masked = [sliced_outputs(m, names, io or {}) for m in full]
        if pruned_outputs is None:
            pruned_outputs = run_model(pruned, [sliced_feeds(f, io or {}) for f in feeds])
        result = compare(names, masked, pruned_outputs, is_quantized(pruned), original_outputs)
        if not result.passed:  # judge it against the masked original's own rounding noise
            result = dataclasses.replace(result, noise=noise_of(full))
    if not result.passed:
        raise VerificationError(
            f"pruned model differs from the masked original: relative error "
            f"{result.relative_error:.3g} > {result.tolerance:.0e} and > {NOISE_FACTOR}x the "
            f"model's own float noise {result.noise or 0:.2g} (mask-equivalence oracle)")
    return result


def _masked_outputs(source: Path, masks: Masks, feeds: Sequence[Mapping], folder: Path,
                    fills: Fills | None = None):
    """Output names, the masked original's outputs, and a function of them giving its noise.

    A model with large external data or many nodes runs in segments, masked as it goes (one
    segment's weights in ``folder`` at a time); any other is written masked to ``folder`` and
    run whole.
    """
    from graphprune.verify.segments import Unsegmentable, is_large, run_in_segments

    if is_large(source):
        try:
            full = run_in_segments(source, feeds, masks, scratch=folder, fills=fills)
        except Unsegmentable:
            pass
        else:
            names = [o.name for o in onnx.load(str(source), load_external_data=False).graph.output]

            def noise(reference):
                optimized = run_in_segments(source, feeds, masks, optimized=True, scratch=folder,
                                            fills=fills)
                return max(relative_error(r, o) for r, o in zip(reference, optimized, strict=True))

            return names, full, noise
    masked_path = write_masked(source, masks, folder / "masked.onnx", fills)
    masked_session = session(masked_path)
    names = [o.name for o in masked_session.get_outputs()]
    full = [masked_session.run(None, dict(f)) for f in feeds]
    del masked_session
    return names, full, lambda reference: float_noise(masked_path, feeds, reference)


def run_model(path: Path, feeds: Sequence[Mapping]) -> list[list[np.ndarray]]:
    """The outputs of the model at ``path`` on every batch (onnxruntime's errors propagate).

    A model with large external data is loaded whole once (mapped, not run), then run in
    segments; one with many nodes runs in segments only (:mod:`graphprune.verify.segments`);
    any other runs in one session.
    """
    from graphprune.verify.segments import Unsegmentable, run_in_segments, segmented_for

    reason = segmented_for(Path(path))
    if reason is not None:
        if reason == "data":
            whole = session(path)  # loads as one model: graph, types, kernels, external data
            del whole
        try:
            return run_in_segments(path, feeds)
        except Unsegmentable:
            pass
    model = session(path)
    return [model.run(None, dict(f)) for f in feeds]

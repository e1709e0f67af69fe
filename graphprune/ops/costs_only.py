"""Cost-only rules: ops that compute (or run subgraphs) but have no channel rule yet.

Each declares MACs (and, for control flow, how often its bodies run) and blocks every channel
axis it touches, exactly as an op without a rule does.

``LSTM``/``GRU``/``RNN``: ``dirs * seq * batch * (|W[d]| + |R[d]|)``, with ``W[dirs, gates*H, I]``
  and ``R[dirs, gates*H, H]`` (4, 3, 1 gates): one gate pre-activation ``W x_t + R h_{t-1}`` per
  step, direction and batch row (``com.microsoft::DynamicQuantizeLSTM`` stores W, R transposed).
``com.microsoft::FusedMatMul``, ``DynamicQuantizeMatMul``, ``MatMulIntegerToFloat``: as MatMul.
``If``: the larger branch; ``Loop``: the body times a static trip count (else once, noted);
``Scan``: the body times the scan length.
"""

from __future__ import annotations

import onnx_ir as ir

from graphprune.core import Blocked, BlockReason
from graphprune.ops.base import BodyMacs, Dims, Rule, attr, fill_shape, known_array
from graphprune.ops.linear import MatMulRule
from graphprune.ops.registry import register

CONTRIB = "com.microsoft"
_MAX_STATIC_TRIPS = 2**31  # a while-loop writes INT64_MAX as its trip count


class CostOnlyRule(Rule):
    """Blocks every axis of the node; subclasses declare :meth:`macs`."""

    cost_only = True

    def couplings(self, node: ir.Node) -> Blocked:
        domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
        detail = f"no channel rule for {domain}{node.op_type}; cost only"
        return self.blocked(node, BlockReason.UNKNOWN_OP, detail)


@register
class RecurrentCostRule(CostOnlyRule):
    """LSTM, GRU and RNN, one or two directions, ``layout`` 0 (``[S,B,I]``) or 1 (``[B,S,I]``)."""

    op_types = ("LSTM", "GRU", "RNN")

    def macs(self, node: ir.Node, dims: Dims) -> int:
        x, w, r = (dims(node.inputs[k]) for k in range(3))
        if x is None or w is None or r is None or len(x) != 3:
            return 0
        seq, batch = (x[1], x[0]) if attr(node, "layout", 0) else (x[0], x[1])
        return seq * batch * w[0] * (self.numel(w[1:]) + self.numel(r[1:]))


@register
class DynamicQuantizeLSTMCostRule(RecurrentCostRule):
    """``com.microsoft::DynamicQuantizeLSTM``: int8 ``W[dirs, I, 4H]``, ``R[dirs, H, 4H]``.

    ONNX has no schema for it, so its output shapes are filled here (LSTM's, layout 0):
    ``Y[S, dirs, B, H]``, ``Y_h[dirs, B, H]``, ``Y_c[dirs, B, H]`` from ``X[S, B, I]``.
    """

    op_types = ("DynamicQuantizeLSTM",)
    domain = CONTRIB

    def refine_shapes(self, node: ir.Node) -> bool:
        x, hidden = node.inputs[0], attr(node, "hidden_size")
        if x is None or x.shape is None or len(x.shape) != 3 or hidden is None:
            return False
        dirs = 2 if attr(node, "direction", "forward") == "bidirectional" else 1
        seq, batch = x.shape[0], x.shape[1]
        outputs = list(node.outputs) + [None] * 3
        changed = fill_shape(outputs[0], [seq, dirs, batch, hidden], x.dtype)
        for state in outputs[1:3]:
            changed = fill_shape(state, [dirs, batch, hidden], x.dtype) or changed
        return changed


@register
class ContribMatMulCostRule(CostOnlyRule, MatMulRule):
    """``com.microsoft`` matrix products with MatMul's operand positions.

    ``FusedMatMul`` (``alpha * A @ B`` with ``transA``/``transB``), ``DynamicQuantizeMatMul``
    (float A, int8 B) and ``MatMulIntegerToFloat``.
    """

    op_types = ("FusedMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
    domain = CONTRIB


# --- control flow ----------------------------------------------------------------------------


def _scalar(value: ir.Value | None) -> int | None:
    """A one-element constant's value as an int, else None."""
    array = known_array(value)
    return None if array is None or array.size != 1 else int(array.reshape(-1)[0])


@register
class IfCostRule(CostOnlyRule):
    """If: only one branch runs; the larger one is counted."""

    op_types = ("If",)

    def body_repeats(self, node: ir.Node, dims: Dims, body_macs: BodyMacs
                     ) -> tuple[dict[str, int], str]:
        branches = {n: node.attributes[n].value for n in ("then_branch", "else_branch")
                    if n in node.attributes}
        if not branches:
            return {}, ""
        larger = max(branches, key=lambda n: body_macs(branches[n]))
        return {larger: 1}, f"If '{node.name}': the larger branch ({larger}) counted"


@register
class LoopCostRule(CostOnlyRule):
    """Loop: the body runs ``M`` times when ``M`` is a constant, else it is counted once."""

    op_types = ("Loop",)

    def body_repeats(self, node: ir.Node, dims: Dims, body_macs: BodyMacs
                     ) -> tuple[dict[str, int], str]:
        del dims, body_macs
        trips = _scalar(node.inputs[0] if node.inputs else None)
        if trips is not None and 0 <= trips < _MAX_STATIC_TRIPS:
            note = "" if self._runs_to_end(node) else (
                f"Loop '{node.name}': at most {trips} iterations (the condition may stop it)")
            return {"body": trips}, note
        return {"body": 1}, f"Loop '{node.name}': trip count not static, one iteration counted"

    @staticmethod
    def _runs_to_end(node: ir.Node) -> bool:
        """The condition cannot stop the loop: the body passes its condition input through."""
        body = node.attributes["body"].value
        cond_in, cond_out = body.inputs[1], body.outputs[0]
        producer = cond_out.producer()
        passthrough = cond_out is cond_in or (
            producer is not None and producer.op_type == "Identity"
            and producer.inputs[0] is cond_in)
        start = node.inputs[1] if len(node.inputs) > 1 else None
        start_true = start is None or _scalar(start) == 1
        return start_true and (passthrough or _scalar(cond_out) == 1)


@register
class ScanCostRule(CostOnlyRule):
    """Scan (opset 9+): the body runs once per element of the first scan input's scan axis."""

    op_types = ("Scan",)
    since_version = 9

    def body_repeats(self, node: ir.Node, dims: Dims, body_macs: BodyMacs
                     ) -> tuple[dict[str, int], str]:
        del body_macs
        scans = attr(node, "num_scan_inputs", 0)
        first = dims(node.inputs[len(node.inputs) - scans]) if scans else None
        axes = attr(node, "scan_input_axes", None)
        axis = int(axes[0]) if axes else 0
        if first is None or not -len(first) <= axis < len(first):
            return {"body": 1}, f"Scan '{node.name}': scan length unknown, one iteration counted"
        return {"body": first[axis]}, ""

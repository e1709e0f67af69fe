"""Running a model with large external data in onnxruntime, a few hundred MiB of weights at a time.

A session maps every weight of the model it runs, and a run touches every page: a 4.5 GB model
costs 4.5 GB of resident memory however it is loaded (8 GB with onnxruntime's MatMul prepacking,
which copies each weight once more). The checks only need the model's outputs, so a model whose
external data is larger than :data:`WHOLE_RUN_BYTES` is run as consecutive *segments* of its
node list (topological order): each segment is a model of its own, holding the initializers its
nodes read (at most about ``budget`` bytes, more for one node that reads more), whose inputs are
the values computed before it and still needed, and whose outputs are the values needed after it.
One segment's session exists at a time; its memory map goes with it.

Models with many nodes (more than :data:`WHOLE_RUN_NODES`) run in segments of at most
:data:`SEGMENT_NODES` nodes too: creating one onnxruntime session grows faster than the graph
(measured on a synthetic 100k-node CNN with 71k initializers: 20 to 43 s per session in one
piece, 2.7 s for all of its 500-node segments), and a job creates three.

With every graph optimization off (as the checks run) onnxruntime runs each node by itself, so
the segments compute, node by node, what one session over the whole model computes. A model
segmented for its data (and not for its nodes) is still loaded once whole, without running it
(prepacking off: the weights are only mapped), so a model that onnxruntime cannot load fails as
before; one segmented for its nodes is not (that load is the cost avoided): every node is still
loaded, type-checked and run, in the segment that holds it.

The masked original of the oracle is built segment by segment as well, without a masked copy
of the model (:mod:`graphprune.verify.masked_segments`).

Subgraphs (If, Loop, Scan) read outer values: those count as the node's inputs. Models this
module cannot cut (sparse initializers, non-tensor values between segments, masked constants
inside subgraphs) raise :class:`Unsegmentable`; the caller runs them whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

SEGMENT_BYTES = 2**29  # weights one segment maps (512 MiB)
WHOLE_RUN_BYTES = 2**30  # models with at most this much external data run in one session
SEGMENT_NODES = 500  # nodes of the main graph one segment runs (at most)
WHOLE_RUN_NODES = 10_000  # models with at most this many main-graph nodes run in one session
ALIGN = 4096  # onnxruntime maps external data at page-aligned offsets
INLINE_BYTES = 2**16  # external tensors up to this size go into a segment's model itself

Feeds = Sequence[Mapping[str, np.ndarray]]
Masks = Mapping[str, Sequence[tuple[int, np.ndarray]]]


class Unsegmentable(Exception):  # noqa: N818 - a condition, not an error to report
    """The model cannot be run in segments (the caller runs it whole)."""


def external_bytes(path: Path) -> int:
    """Bytes of the main graph's initializers stored in external data files."""
    proto = onnx.load(str(path), load_external_data=False)
    return sum(_bytes(t) for t in proto.graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL)


def _bytes(tensor: onnx.TensorProto) -> int:
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    return math.prod(tensor.dims) * _itemsize(tensor.data_type)


@functools.cache
def _itemsize(data_type: int) -> int:
    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            found.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            found.extend(a.graphs)
    return found


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the scopes around it."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used |= {n for n in node.input if n and n not in defined}
        for sub in _subgraphs(node):
            used |= _outer_names(sub) - defined
        defined |= set(node.output)
    return used | ({o.name for o in graph.output} - defined)


def _reads(node: onnx.NodeProto) -> list[str]:
    """The names ``node`` reads, each once: its inputs, and outer values its subgraphs read."""
    names = [n for n in node.input if n]
    if len(node.attribute):
        for sub in _subgraphs(node):
            names += sorted(_outer_names(sub))
    return list(dict.fromkeys(names))


@dataclasses.dataclass
class _Segment:
    nodes: list[onnx.NodeProto]
    initializers: list[str]
    reads: list[list[str]]  # per node, :func:`_reads`
    inputs: list[str] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=list)
    dead: list[str] = dataclasses.field(default_factory=list)  # not needed after this segment


def plan_segments(graph: onnx.GraphProto, budget: int, fed: set[str],
                  max_nodes: int | None = None) -> list[_Segment]:
    """Cuts the node list into segments of at most ``budget`` initializer bytes and nodes.

    A cut comes where the initializers read since the last cut would exceed ``budget``, or
    where the segment has ``max_nodes`` nodes (:data:`SEGMENT_NODES` when None).
    """
    max_nodes = SEGMENT_NODES if max_nodes is None else max_nodes
    if len(graph.sparse_initializer):
        raise Unsegmentable("sparse initializers")
    inits = {t.name: t for t in graph.initializer if t.name not in fed}
    sizes: dict[str, int] = {}

    def size_of(name: str) -> int:
        if name not in sizes:
            sizes[name] = _bytes(inits[name])
        return sizes[name]

    segments: list[_Segment] = []
    nodes: list[onnx.NodeProto] = []
    reads: list[list[str]] = []
    weights: dict[str, None] = {}
    size = 0
    for node in graph.node:
        read = _reads(node)
        new = [n for n in read if n in inits and n not in weights]
        add = sum(size_of(n) for n in new)
        if nodes and (size + add > budget or len(nodes) >= max_nodes):
            segments.append(_Segment(nodes, list(weights), reads))
            nodes, reads, weights, size = [], [], {}, 0
            new = [n for n in read if n in inits]
            add = sum(size_of(n) for n in new)
        nodes.append(node)
        reads.append(read)
        weights.update(dict.fromkeys(new))
        size += add
    if nodes:
        segments.append(_Segment(nodes, list(weights), reads))
    _connect(segments, graph, set(inits))
    return segments


def _connect(segments: list[_Segment], graph: onnx.GraphProto, inits: set[str]) -> None:
    """Each segment's inputs, outputs and the values dropped after it."""
    last_use: dict[str, int] = {}
    for k, segment in enumerate(segments):
        for read in segment.reads:
            for name in read:
                last_use[name] = k
    final = {o.name for o in graph.output}
    produced: set[str] = set()
    for k, segment in enumerate(segments):
        made = {o for node in segment.nodes for o in node.output if o}
        reads = dict.fromkeys(n for read in segment.reads for n in read)
        segment.inputs = [n for n in reads if n not in inits and n not in made]
        segment.outputs = [n for n in sorted(made)
                           if n in final or last_use.get(n, -1) > k]
        produced |= made
        segment.dead = [n for n in segment.inputs if last_use.get(n, -1) <= k and n not in final]
    missing = final - produced - {v.name for v in graph.input}
    if missing:
        raise Unsegmentable(f"graph outputs not computed by a node: {sorted(missing)[:3]}")


def _value_info(name: str, array) -> onnx.ValueInfoProto:
    if not isinstance(array, np.ndarray):
        raise Unsegmentable(f"'{name}' is not a tensor")
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                         list(array.shape))


def _inline_small(tensor: onnx.TensorProto, folder: Path) -> onnx.TensorProto:
    """A small external tensor inline (onnxruntime reads shape constants of a model from bytes)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL or _bytes(tensor) > INLINE_BYTES:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor, base_dir=str(folder)),
                                   tensor.name)


def _segment_model(proto: onnx.ModelProto, segment: _Segment, env: Mapping[str, np.ndarray],
                   nodes: list[onnx.NodeProto], tensors: list[onnx.TensorProto]
                   ) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, f"{proto.graph.name}_segment",
        [_value_info(n, env[n]) for n in segment.inputs],
        [onnx.ValueInfoProto(name=n) for n in segment.outputs],
        tensors)
    model = helper.make_model(graph, opset_imports=proto.opset_import,
                              ir_version=proto.ir_version)
    model.functions.extend(proto.functions)
    return model


def segment_session(model: onnx.ModelProto, folder: Path, optimized: bool = False):
    """A CPU session of one segment whose external data lies in ``folder``."""
    import onnxruntime as ort

    from graphprune.verify.oracle import session_options

    options = session_options(optimized)
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(folder))
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _masked_session(proto, segment, env, tensors, masking, folder: Path, scratch: Path,
                    optimized: bool):
    """The session of a masked segment, its weights masked into ``scratch``."""
    from graphprune.verify.masked_segments import scratch_initializers

    nodes = [masking.node(n) for n in segment.nodes]
    tensors = scratch_initializers(tensors, masking, folder, scratch)
    return segment_session(_segment_model(proto, segment, env, nodes, tensors), scratch,
                           optimized)


def run_in_segments(path: Path, feeds: Feeds, masks: Masks | None = None,
                    budget: int | None = None, optimized: bool = False,
                    scratch: Path | None = None, fills=None) -> list[list[np.ndarray]]:
    """The model's outputs on every batch of ``feeds``, one segment's session at a time.

    Args:
        path: A model file (its external data beside it, as the model names it).
        feeds: The batches.
        masks: Run the masked original instead (``PruneResult.masks``; see the oracle and
            :mod:`graphprune.verify.masked_segments`).
        budget: Initializer bytes a segment reads (:data:`SEGMENT_BYTES`; one node reading
            more gets a segment alone).
        optimized: onnxruntime's graph optimizations on (the oracle's float-noise estimate).
        scratch: Where masked segments are written (a temporary folder in it; default: the
            system's temporary folder, which may be memory-backed: the oracle passes a folder
            beside the output).
        fills: With ``masks``: what removed entries become (``oracle.fills_for``; read from
            the model when None).
    """
    from graphprune.verify.masked_segments import Masking

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    fed = set().union(*(set(f) for f in feeds)) if feeds else set()
    segments = plan_segments(proto.graph, SEGMENT_BYTES if budget is None else budget, fed)
    masking = Masking(path, proto, masks, fills) if masks else None
    inits = {t.name: t for t in proto.graph.initializer}
    envs = [dict(f) for f in feeds]
    with contextlib.ExitStack() as stack:
        if masking is not None:
            scratch = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix=".graphprune-", dir=scratch)))
        for segment in segments:
            tensors = [_inline_small(inits[n], path.parent) for n in segment.initializers]
            if masking is None:
                model = _segment_model(proto, segment, envs[0], segment.nodes, tensors)
                session = segment_session(model, path.parent, optimized)
            else:
                session = _masked_session(proto, segment, envs[0], tensors, masking,
                                          path.parent, scratch, optimized)
            for env in envs:
                outputs = session.run(segment.outputs, {n: env[n] for n in segment.inputs})
                env.update(zip(segment.outputs, outputs, strict=True))
                for name in segment.dead:
                    env.pop(name, None)
            del session
    return [[env[o.name] for o in proto.graph.output] for env in envs]


def is_large(path: Path, limit: int | None = None) -> bool:
    """Whether the model runs in segments (see :func:`segmented_for`)."""
    return segmented_for(Path(path), limit) is not None


def segmented_for(path: Path, limit: int | None = None) -> str | None:
    """Why the model at ``path`` runs in segments, or None when it runs whole.

    ``"nodes"``: more than :data:`WHOLE_RUN_NODES` main-graph nodes; ``"data"``: external data
    above ``limit`` (:data:`WHOLE_RUN_BYTES`).
    """
    limit = WHOLE_RUN_BYTES if limit is None else limit
    proto = onnx.load(str(path), load_external_data=False)
    if len(proto.graph.node) > WHOLE_RUN_NODES:
        return "nodes"
    external = sum(_bytes(t) for t in proto.graph.initializer
                   if t.data_location == onnx.TensorProto.EXTERNAL)
    return "data" if external > limit else None

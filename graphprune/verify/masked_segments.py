"""The masked original, segment by segment (see :mod:`graphprune.verify.segments`).

A segment's weights are read from the data file with plain reads, masked one tensor at a time
(0, 1 for divisors, or what the op rule's ``masked_values`` says) and written to a scratch data
file that the segment's session maps, so at most one segment's weights are on disk there and
one tensor is in memory. Two alternatives measured no better on the 1.1B decoder: weights handed
to onnxruntime in memory (``add_external_initializers``) are copied by it (twice the memory), and
masking in the segment's graph (``Where(keep, W, 0)`` on the mapped original) took as long at
twice the peak memory (1.46 vs 0.67 GiB).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphprune.verify.segments import ALIGN, Unsegmentable

Masks = Mapping[str, Sequence[tuple[int, np.ndarray]]]


class Masking:
    """Masked initializers and Constant nodes of one model, made segment by segment."""

    def __init__(self, path: Path, proto: onnx.ModelProto, masks: Masks, fills=None) -> None:
        if fills is None:
            import onnx_ir as ir

            from graphprune.verify.oracle import fills_for

            fills = fills_for(ir.load(path), masks)  # names and rules only; tensors on disk
        self.fills = fills
        self.masks = masks
        self.folder = path.parent
        top = {t.name for t in proto.graph.initializer} | {
            o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
        if set(masks) - top:
            raise Unsegmentable("masked constants inside subgraphs")

    def applies(self, name: str) -> bool:
        return name in self.masks and self.fill(name) is not None

    def fill(self, name: str):
        return self.fills.get(name, 0)

    def masked(self, name: str, load) -> np.ndarray | None:
        """``load()`` masked, when ``name`` is masked (None when not, or when left as is)."""
        from graphprune.verify.oracle import _masked_array

        if not self.applies(name):
            return None
        return _masked_array(load(), list(self.masks[name]), self.fill(name), copy=False)

    def initializer(self, tensor: onnx.TensorProto) -> np.ndarray | None:
        return self.masked(tensor.name, lambda: writable(tensor, self.folder))

    def node(self, node: onnx.NodeProto) -> onnx.NodeProto:
        """``node`` itself, or a copy with its masked value when it is a masked Constant."""
        if node.op_type != "Constant" or node.output[0] not in self.masks:
            return node
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is None:
            raise Unsegmentable("a masked Constant without a tensor value")
        masked = self.masked(node.output[0], lambda: numpy_helper.to_array(value.t).copy())
        if masked is None:
            return node
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        attr = next(a for a in copy.attribute if a.name == "value")
        attr.t.CopyFrom(numpy_helper.from_array(masked, value.t.name))
        return copy



def writable(tensor: onnx.TensorProto, folder: Path) -> np.ndarray:
    """A tensor's contents as a writable array of its own (external data read, one copy)."""
    info = {e.key: e.value for e in tensor.external_data}
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    if tensor.data_location != onnx.TensorProto.EXTERNAL or dtype.kind not in "fiub":
        return numpy_helper.to_array(tensor, base_dir=str(folder)).copy()
    count = int(np.prod(tensor.dims, dtype=np.int64))
    array = np.fromfile(folder / info["location"], dtype=dtype.newbyteorder("<"), count=count,
                        offset=int(info.get("offset", 0)))
    return array.astype(dtype, copy=False).reshape(tuple(tensor.dims))


def _written(name: str, array: np.ndarray, data) -> onnx.TensorProto:
    """``array`` appended to the open file ``data`` (page-aligned, as onnxruntime maps it)."""
    data.seek(-data.tell() % ALIGN, 1)
    offset = data.tell()
    np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tofile(data)
    proto = onnx.TensorProto(name=name, dims=array.shape,
                             data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                             data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", Path(data.name).name), ("offset", str(offset)),
                       ("length", str(array.nbytes))):
        proto.external_data.add(key=key, value=value)
    return proto


def scratch_initializers(tensors: list[onnx.TensorProto], masking: Masking, folder: Path,
                         scratch: Path) -> list[onnx.TensorProto]:
    """Every external tensor of a segment, masked or not, written to ``scratch/segment.data``."""
    tensors = list(tensors)
    with open(scratch / "segment.data", "wb") as data:
        for k, tensor in enumerate(tensors):
            external = tensor.data_location == onnx.TensorProto.EXTERNAL
            array = masking.initializer(tensor)
            if array is None and external:
                array = writable(tensor, folder)
            if array is not None:
                tensors[k] = _written(tensor.name, array, data) if external else \
                    numpy_helper.from_array(array, tensor.name)
            del array
    return tensors

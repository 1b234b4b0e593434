"""Read a TensorFlow.js graph model (``model.json`` + weight shards) and run it in torch.

The teacher detector ships only as a TFJS graph and TensorFlow is not installable here, so the graph is
interpreted: one small torch function per TF op it uses. Tensors stay NHWC as in TF, so every axis
constant of the graph (Mean, ConcatV2, Reshape, GatherV2, StridedSlice) keeps its meaning; convolutions
and pooling view NHWC as a channels-last NCHW tensor around the torch call (a free permute). TF's SAME
padding is applied explicitly: TF puts the odd pixel at the bottom/right, which torch cannot express.
Filters are converted to torch layouts once at load, so a forward pass only computes.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


class TeacherError(RuntimeError):
    """A teacher graph that cannot be read or run (missing file, bad shard, unsupported op)."""


class Node:
    """One TF node: op, data inputs (``name`` or ``name:k`` for output k; control deps dropped), attrs."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name: str = raw["name"]
        self.op: str = raw["op"]
        self.inputs: list[str] = [i for i in raw.get("input", []) if not i.startswith("^")]
        self.attr: dict[str, Any] = dict(raw.get("attr", {}))
        self.prepared: dict[str, Any] = {}  # load-time conversions (torch-layout filters)

    def ints(self, key: str, default: Sequence[int] = ()) -> list[int]:
        value = self.attr.get(key)
        return [int(v) for v in value.get("list", {}).get("i", [])] if value else list(default)

    def int(self, key: str, default: int = 0) -> int:
        value = self.attr.get(key)
        return int(value["i"]) if value and "i" in value else default

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.attr.get(key)
        return bool(value["b"]) if value and "b" in value else default

    def string(self, key: str, default: str = "") -> str:
        value = self.attr.get(key)
        return base64.b64decode(value["s"]).decode() if value and "s" in value else default

    def strings(self, key: str) -> list[str]:
        value = self.attr.get(key)
        return [base64.b64decode(s).decode() for s in value.get("list", {}).get("s", [])] if value else []


_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_STORED = {"float16": np.dtype("<f2")}  # quantization dtypes read here (widened to the entry's dtype)


def read_weights(folder: Path, manifest: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Every weight of the manifest: shards of a group concatenated, entries in order, sizes exact."""
    weights: dict[str, torch.Tensor] = {}
    for group in manifest:
        layout = []
        for entry in group["weights"]:
            quant = (entry.get("quantization") or {}).get("dtype")
            stored = _STORED.get(quant) if quant else _DTYPES.get(entry["dtype"])
            if stored is None or entry["dtype"] not in _DTYPES:
                raise TeacherError(f"weight {entry['name']}: dtype {entry['dtype']} / {quant} unsupported")
            layout.append((entry, stored, math.prod(int(s) for s in entry["shape"])))
        paths = [folder / p for p in group["paths"]]
        for path in paths:
            if not path.is_file():
                raise TeacherError(f"teacher weight shard {path} is missing")
        blob = b"".join(p.read_bytes() for p in paths)
        needed = sum(count * stored.itemsize for _, stored, count in layout)
        if len(blob) != needed:
            raise TeacherError(
                f"teacher weight shards {[str(p) for p in paths]} hold {len(blob)} bytes but the manifest "
                f"needs {needed}: truncated or wrong file"
            )
        offset = 0
        for entry, stored, count in layout:
            array = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            shape = [int(s) for s in entry["shape"]]
            native = _DTYPES[entry["dtype"]].newbyteorder("=")
            weights[entry["name"]] = torch.from_numpy(array.astype(native)).reshape(shape)  # a copy: writable
            offset += count * stored.itemsize
    return weights


def conv_filter(weight: torch.Tensor, depthwise: bool) -> tuple[torch.Tensor, int]:
    """A TF filter in torch layout, and its groups: HWIO -> OIHW; [H, W, in, mult] -> [in*mult, 1, H, W]."""
    if depthwise:
        h, w, cin, mult = weight.shape
        return weight.permute(2, 3, 0, 1).reshape(cin * mult, 1, h, w).contiguous(), cin
    return weight.permute(3, 2, 0, 1).contiguous(), 1


def same_pad(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """TF SAME padding of an NCHW tensor: total max((ceil(n/s)-1)*s + k - n, 0), the odd pixel after."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _padding(node: Node) -> str:
    padding = node.string("padding", "VALID")
    if padding not in ("SAME", "VALID"):
        raise TeacherError(f"node {node.name} ({node.op}): padding {padding!r} is not supported")
    return padding


def _check_conv_attrs(node: Node) -> None:
    if node.string("data_format", "NHWC") != "NHWC":
        raise TeacherError(f"node {node.name} ({node.op}): only NHWC is supported")
    if node.ints("dilations", (1, 1, 1, 1)) != [1, 1, 1, 1]:
        raise TeacherError(f"node {node.name} ({node.op}): dilated convolutions are not supported")
    _padding(node)


def _conv(node: Node, x: torch.Tensor, weight: torch.Tensor, depthwise: bool) -> torch.Tensor:
    wt, groups = node.prepared["filter"] if "filter" in node.prepared else conv_filter(weight, depthwise)
    strides = node.ints("strides", (1, 1, 1, 1))[1:3]
    xc = x.permute(0, 3, 1, 2)  # NHWC memory seen as channels-last NCHW: no copy
    if _padding(node) == "SAME":
        xc = same_pad(xc, wt.shape[2:], strides)
    return F.conv2d(xc, wt, stride=strides, groups=groups).permute(0, 2, 3, 1)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu,
    "Relu6": lambda t: t.clamp(0.0, 6.0),
}


def _fused(depthwise: bool) -> Callable[[Node, list[Any]], torch.Tensor]:
    """_FusedConv2D / FusedDepthwiseConv2dNative, fused_ops BiasAdd[, Relu|Relu6]: inputs x, filter, bias."""

    def run(node: Node, args: list[Any]) -> torch.Tensor:
        fused = node.strings("fused_ops")
        if fused[:1] != ["BiasAdd"] or len(fused) > 2 or any(f not in _ACTIVATIONS for f in fused[1:]):
            raise TeacherError(f"node {node.name} ({node.op}): fused ops {fused} are not supported")
        y = _conv(node, args[0], args[1], depthwise) + args[2]
        return _ACTIVATIONS[fused[1]](y) if len(fused) == 2 else y

    return run


def _resize_bilinear(node: Node, args: list[Any]) -> torch.Tensor:
    """TF's legacy ResizeBilinear: src = dst * in / out, i1 = min(floor(src) + 1, in - 1), by gathers."""
    if node.bool("align_corners") or node.bool("half_pixel_centers"):
        raise TeacherError(f"node {node.name}: only legacy ResizeBilinear sampling is supported")
    x, (out_h, out_w) = args[0], [int(v) for v in args[1].tolist()]

    def axis(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
        i0 = src.floor().long().clamp(max=size_in - 1)
        return i0, (i0 + 1).clamp(max=size_in - 1), (src - i0).to(x.dtype)

    y0, y1, fy = axis(x.shape[1], out_h)
    x0, x1, fx = axis(x.shape[2], out_w)
    fy, fx = fy.view(1, -1, 1, 1), fx.view(1, 1, -1, 1)
    rows = x[:, y0] * (1 - fy) + x[:, y1] * fy
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def _max_pool(node: Node, args: list[Any]) -> torch.Tensor:
    k, s = node.ints("ksize")[1:3], node.ints("strides")[1:3]
    xc = args[0].permute(0, 3, 1, 2)
    if _padding(node) == "SAME":
        xc = same_pad(xc, k, s, value=float("-inf"))
    return F.max_pool2d(xc, k, s).permute(0, 2, 3, 1)


def _strided_slice(node: Node, args: list[Any]) -> torch.Tensor:
    """Positive strides with begin/end/shrink masks; ellipsis and new-axis masks are refused."""
    x, begin, end, strides = args[0], args[1].tolist(), args[2].tolist(), args[3].tolist()
    if node.int("ellipsis_mask") or node.int("new_axis_mask"):
        raise TeacherError(f"node {node.name}: StridedSlice ellipsis / new-axis masks are not supported")
    if any(s <= 0 for s in strides):
        raise TeacherError(f"node {node.name}: StridedSlice with non-positive strides is not supported")
    bm, em, sm = node.int("begin_mask"), node.int("end_mask"), node.int("shrink_axis_mask")
    index: list[int | slice] = []
    for i, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
        if sm >> i & 1:
            index.append(int(b))
        else:
            index.append(slice(None if bm >> i & 1 else b, None if em >> i & 1 else e, s))
    return x[tuple(index)]


def _gather(node: Node, args: list[Any]) -> torch.Tensor:
    params, indices, axis = args[0], args[1].long(), int(args[2])
    if node.int("batch_dims"):
        raise TeacherError(f"node {node.name}: GatherV2 with batch_dims is not supported")
    axis %= params.dim()
    picked = params.index_select(axis, indices.reshape(-1))
    return picked.reshape(*params.shape[:axis], *indices.shape, *params.shape[axis + 1 :])


_TORCH_DTYPES = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32, "DT_BOOL": torch.bool}


def _cast(node: Node, args: list[Any]) -> torch.Tensor:
    dst = node.attr.get("DstT", {}).get("type", "DT_FLOAT")
    if dst not in _TORCH_DTYPES:
        raise TeacherError(f"node {node.name}: Cast to {dst} is not supported")
    return args[0].to(_TORCH_DTYPES[dst])


def _topk(node: Node, args: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``:0`` values (sorted, largest first) and ``:1`` int32 indices along the last axis."""
    values, indices = torch.topk(args[0], int(args[1]), dim=-1, sorted=True)
    return values, indices.to(torch.int32)


OpFn = Callable[[Node, list[Any]], Any]

OPS: dict[str, OpFn] = {
    "Identity": lambda n, a: a[0],
    "_FusedConv2D": _fused(depthwise=False),
    "FusedDepthwiseConv2dNative": _fused(depthwise=True),
    "Conv2D": lambda n, a: _conv(n, a[0], a[1], depthwise=False),
    "DepthwiseConv2dNative": lambda n, a: _conv(n, a[0], a[1], depthwise=True),
    "Relu": lambda n, a: F.relu(a[0]),
    "Relu6": lambda n, a: a[0].clamp(0.0, 6.0),
    "Sigmoid": lambda n, a: torch.sigmoid(a[0]),
    "Add": lambda n, a: a[0] + a[1],
    "AddV2": lambda n, a: a[0] + a[1],
    "Sub": lambda n, a: a[0] - a[1],
    "Mul": lambda n, a: a[0] * a[1],
    "FloorDiv": lambda n, a: torch.div(a[0], a[1], rounding_mode="floor"),
    "FloorMod": lambda n, a: torch.remainder(a[0], a[1]),
    "Equal": lambda n, a: a[0] == a[1],
    "Mean": lambda n, a: a[0].mean(dim=a[1].reshape(-1).tolist(), keepdim=n.bool("keep_dims")),
    "ConcatV2": lambda n, a: torch.cat(a[:-1], dim=int(a[-1])),
    "Reshape": lambda n, a: a[0].reshape([int(v) for v in a[1].reshape(-1).tolist()]),
    "ExpandDims": lambda n, a: a[0].unsqueeze(int(a[1])),
    "ResizeBilinear": _resize_bilinear,
    "MaxPool": _max_pool,
    "StridedSlice": _strided_slice,
    "GatherV2": _gather,
    "Cast": _cast,
    "TopKV2": _topk,
}
_CONVS = {"_FusedConv2D": False, "Conv2D": False, "FusedDepthwiseConv2dNative": True,
          "DepthwiseConv2dNative": True}


def _name(ref: str) -> str:
    return ref.partition(":")[0]


def _pick(value: Any, ref: str) -> Any:
    """Output ``k`` of a multi-output op for ``name:k`` (output 0 of a tuple otherwise)."""
    index = ref.partition(":")[2]
    return value[int(index) if index else 0] if isinstance(value, tuple) else value


class TFJSGraph:
    """A TFJS graph model run node by node in torch (no gradient); checked fully at construction."""

    def __init__(self, nodes: Sequence[Node], weights: Mapping[str, torch.Tensor]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.weights = dict(weights)
        unsupported = sorted({n.op for n in nodes if n.op not in {*OPS, "Const", "Placeholder"}})
        if unsupported:
            examples = {op: next(n.name for n in nodes if n.op == op) for op in unsupported}
            raise TeacherError(f"the teacher graph uses ops this reader cannot run: {examples} (op: a node)")
        missing = [n.name for n in nodes if n.op == "Const" and n.name not in self.weights]
        if missing:
            raise TeacherError(f"the teacher graph's constants {missing[:3]} are not in its weight manifest")
        dangling = [(n.name, i) for n in nodes for i in n.inputs if _name(i) not in self.nodes]
        if dangling:
            raise TeacherError(f"the teacher graph's node inputs {dangling[:3]} name no node")
        for node in nodes:
            if node.op in _CONVS:
                _check_conv_attrs(node)
                filt = _name(node.inputs[1])
                if self.nodes[filt].op == "Const":
                    node.prepared["filter"] = conv_filter(self.weights[filt], _CONVS[node.op])
        self._plans: dict[tuple[str, ...], list[Node]] = {}

    @classmethod
    def load(cls, model_json: str | Path) -> TFJSGraph:
        """The graph of ``model_json`` with the weight shards its manifest names (next to it)."""
        path = Path(model_json)
        if not path.is_file():
            raise TeacherError(f"teacher graph {path} does not exist")
        try:
            spec = json.loads(path.read_text())
            nodes = [Node(raw) for raw in spec["modelTopology"]["node"]]
            manifest = spec["weightsManifest"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise TeacherError(f"{path} is not a TFJS graph model ({e!r})") from e
        return cls(nodes, read_weights(path.parent, manifest))

    def _plan(self, outputs: tuple[str, ...]) -> list[Node]:
        """Non-constant nodes the outputs need, inputs first (iterative: deep graphs, no recursion limit)."""
        order: list[Node] = []
        done: set[str] = set()
        for out in outputs:
            if _name(out) not in self.nodes:
                raise TeacherError(f"the teacher graph has no node {out!r}")
            stack = [(_name(out), False)]
            while stack:
                name, expanded = stack.pop()
                if name in done:
                    continue
                node = self.nodes[name]
                if expanded or node.op in ("Const", "Placeholder"):
                    done.add(name)
                    order.append(node)
                    continue
                stack.append((name, True))
                stack.extend((_name(i), False) for i in node.inputs if _name(i) not in done)
        return order

    @torch.no_grad()
    def run(self, feeds: Mapping[str, torch.Tensor], outputs: Sequence[str]) -> list[Any]:
        """Values of ``outputs`` (``name`` or ``name:k``) given the placeholders' ``feeds``."""
        key = tuple(outputs)
        if key not in self._plans:
            self._plans[key] = self._plan(key)
        values: dict[str, Any] = {}
        for node in self._plans[key]:
            if node.op == "Const":
                values[node.name] = self.weights[node.name]
            elif node.op == "Placeholder":
                if node.name not in feeds:
                    raise TeacherError(f"placeholder {node.name!r} was not fed")
                values[node.name] = feeds[node.name].contiguous()
            else:
                values[node.name] = OPS[node.op](node, [_pick(values[_name(i)], i) for i in node.inputs])
        return [_pick(values[_name(o)], o) for o in outputs]

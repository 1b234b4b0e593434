"""Read a TensorFlow.js graph model (``model.json`` + weight shards) and run it in torch.

The teacher detector ships only as a TFJS graph, and TensorFlow is not installable here. A graph model is
a list of TF nodes (op, inputs, attrs) plus little-endian weight shards; running it needs one small torch
function per op the graph uses. Tensors stay NHWC as in TF (so every axis constant of the graph keeps its
meaning); convolutions and pooling permute to NCHW and back around the torch call. TF's SAME padding is
applied explicitly (TF puts the odd pixel at the bottom/right, torch's ``padding="same"`` cannot stride).
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

OpFn = Callable[["Node", list[Any]], Any]


class TeacherError(RuntimeError):
    """A teacher graph that cannot be read or run (missing file, bad shard, unsupported op)."""


class Node:
    """One TF node: its op, input names (``name`` or ``name:k`` for output k) and decoded attrs."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.name: str = raw["name"]
        self.op: str = raw["op"]
        self.inputs: list[str] = [i for i in raw.get("input", []) if not i.startswith("^")]
        self.attr: dict[str, Any] = dict(raw.get("attr", {}))

    def ints(self, key: str, default: Sequence[int] = ()) -> list[int]:
        value = self.attr.get(key)
        return [int(v) for v in value["list"].get("i", [])] if value else list(default)

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
        return [base64.b64decode(s).decode() for s in value["list"].get("s", [])] if value else []


_DTYPES = {"float32": np.float32, "int32": np.int32}


def read_weights(folder: Path, manifest: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Every weight of the manifest, float16-quantised ones widened to float32; sizes checked exactly."""
    weights: dict[str, torch.Tensor] = {}
    for group in manifest:
        blob = b""
        for name in group["paths"]:
            path = folder / name
            if not path.is_file():
                raise TeacherError(f"teacher weight shard {path} is missing")
            blob += path.read_bytes()
        offset = 0
        for entry in group["weights"]:
            shape = [int(s) for s in entry["shape"]]
            count = math.prod(shape)
            quant = (entry.get("quantization") or {}).get("dtype")
            if quant == "float16":
                stored = np.float16
            elif quant is None and entry["dtype"] in _DTYPES:
                stored = _DTYPES[entry["dtype"]]
            else:
                raise TeacherError(f"weight {entry['name']}: unsupported dtype {entry['dtype']} / {quant}")
            size = count * np.dtype(stored).itemsize
            if offset + size > len(blob):
                raise TeacherError(
                    f"teacher weight shards {group['paths']} are too short ({len(blob)} bytes; weight "
                    f"{entry['name']} needs bytes {offset}-{offset + size}): truncated or wrong file"
                )
            array = np.frombuffer(blob, dtype=np.dtype(stored).newbyteorder("<"), count=count, offset=offset)
            array = array.astype(_DTYPES[entry["dtype"]]).reshape(shape)
            weights[entry["name"]] = torch.from_numpy(array.copy())
            offset += size
        if offset != len(blob):
            raise TeacherError(f"teacher weight shards {group['paths']}: {len(blob) - offset} bytes too many")
    return weights


def _same_pad(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], value: float = 0.0
) -> torch.Tensor:
    """TF SAME padding of an NCHW tensor (extra pixel bottom/right)."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _padding(node: Node) -> str:
    padding = node.string("padding", "VALID")
    if padding not in ("SAME", "VALID"):
        raise TeacherError(f"node {node.name}: padding {padding!r} is not supported")
    return padding


def _conv(node: Node, x: torch.Tensor, weight: torch.Tensor, *, depthwise: bool) -> torch.Tensor:
    strides = node.ints("strides", (1, 1, 1, 1))[1:3]
    if node.ints("dilations", (1, 1, 1, 1)) != [1, 1, 1, 1]:
        raise TeacherError(f"node {node.name}: dilated convolutions are not supported")
    xc = x.permute(0, 3, 1, 2)
    k = list(weight.shape[:2])
    if depthwise:  # [H, W, in, mult] -> [in * mult, 1, H, W]
        h, w, cin, mult = weight.shape
        wt, groups = weight.permute(2, 3, 0, 1).reshape(cin * mult, 1, h, w), cin
    else:  # HWIO -> OIHW
        wt, groups = weight.permute(3, 2, 0, 1), 1
    if _padding(node) == "SAME":
        xc = _same_pad(xc, k, strides)
    return F.conv2d(xc, wt.contiguous(), stride=strides, groups=groups).permute(0, 2, 3, 1)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu, "Relu6": lambda t: t.clamp(0.0, 6.0), "Sigmoid": torch.sigmoid,
}


def _fused(depthwise: bool) -> OpFn:
    def run(node: Node, args: list[Any]) -> torch.Tensor:
        fused = node.strings("fused_ops")
        if not fused or fused[0] != "BiasAdd" or any(f not in _ACTIVATIONS for f in fused[1:]):
            raise TeacherError(f"node {node.name}: fused ops {fused} are not supported")
        y = _conv(node, args[0], args[1], depthwise=depthwise) + args[2]
        for f in fused[1:]:
            y = _ACTIVATIONS[f](y)
        return y

    return run


def _resize_bilinear(node: Node, args: list[Any]) -> torch.Tensor:
    """TF's legacy ResizeBilinear (align_corners and half_pixel_centers off): src = dst * in / out."""
    if node.bool("align_corners") or node.bool("half_pixel_centers"):
        raise TeacherError(f"node {node.name}: only legacy ResizeBilinear sampling is supported")
    x, (out_h, out_w) = args[0], [int(v) for v in args[1].tolist()]

    def axis(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size_out, dtype=torch.float32) * (size_in / size_out)
        i0 = src.floor().long().clamp(max=size_in - 1)
        return i0, (i0 + 1).clamp(max=size_in - 1), src - i0.float()

    y0, y1, fy = axis(x.shape[1], out_h)
    x0, x1, fx = axis(x.shape[2], out_w)
    top = x[:, y0] * (1 - fy).view(1, -1, 1, 1) + x[:, y1] * fy.view(1, -1, 1, 1)
    return top[:, :, x0] * (1 - fx).view(1, 1, -1, 1) + top[:, :, x1] * fx.view(1, 1, -1, 1)


def _max_pool(node: Node, args: list[Any]) -> torch.Tensor:
    k, s = node.ints("ksize")[1:3], node.ints("strides")[1:3]
    xc = args[0].permute(0, 3, 1, 2)
    if _padding(node) == "SAME":
        xc = _same_pad(xc, k, s, value=float("-inf"))
    return F.max_pool2d(xc, k, s).permute(0, 2, 3, 1)


def _strided_slice(node: Node, args: list[Any]) -> torch.Tensor:
    x, begin, end, strides = args[0], args[1].tolist(), args[2].tolist(), args[3].tolist()
    if node.int("ellipsis_mask") or node.int("new_axis_mask") or node.int("shrink_axis_mask"):
        raise TeacherError(f"node {node.name}: StridedSlice ellipsis / new-axis / shrink masks: unsupported")
    if any(s <= 0 for s in strides):
        raise TeacherError(f"node {node.name}: StridedSlice with non-positive strides is not supported")
    bm, em = node.int("begin_mask"), node.int("end_mask")
    index = tuple(
        slice(None if bm >> i & 1 else b, None if em >> i & 1 else e, s)
        for i, (b, e, s) in enumerate(zip(begin, end, strides, strict=True))
    )
    return x[index]


def _gather(node: Node, args: list[Any]) -> torch.Tensor:
    params, indices, axis = args[0], args[1].long(), int(args[2])
    if node.int("batch_dims"):
        raise TeacherError(f"node {node.name}: GatherV2 with batch_dims is not supported")
    axis %= params.dim()
    picked = params.index_select(axis, indices.reshape(-1))
    return picked.reshape(*params.shape[:axis], *indices.shape, *params.shape[axis + 1 :])


def _cast(node: Node, args: list[Any]) -> torch.Tensor:
    dst = node.attr.get("DstT", {}).get("type", "DT_FLOAT")
    dtypes = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32, "DT_BOOL": torch.bool}
    if dst not in dtypes:
        raise TeacherError(f"node {node.name}: Cast to {dst} is not supported")
    return args[0].to(dtypes[dst])


def _topk(node: Node, args: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.topk(args[0], int(args[1]), dim=-1, sorted=True)
    return values, indices.to(torch.int32)


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


class TFJSGraph:
    """A TFJS graph model, run node by node in torch (no gradient)."""

    def __init__(self, nodes: Sequence[Node], weights: Mapping[str, torch.Tensor]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.weights = dict(weights)
        known = {*OPS, "Const", "Placeholder"}
        unsupported = sorted({n.op for n in nodes if n.op not in known})
        if unsupported:
            raise TeacherError(f"the teacher graph uses ops this reader cannot run: {', '.join(unsupported)}")
        missing = [n.name for n in nodes if n.op == "Const" and n.name not in self.weights]
        if missing:
            raise TeacherError(f"the teacher graph's constants {missing[:3]} are not in its weight manifest")

    @classmethod
    def load(cls, model_json: str | Path) -> TFJSGraph:
        path = Path(model_json)
        if not path.is_file():
            raise TeacherError(f"teacher graph {path} does not exist")
        try:
            spec = json.loads(path.read_text())
            nodes = [Node(raw) for raw in spec["modelTopology"]["node"]]
            manifest = spec["weightsManifest"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise TeacherError(f"{path} is not a TFJS graph model ({e})") from e
        return cls(nodes, read_weights(path.parent, manifest))

    @torch.no_grad()
    def run(self, feeds: Mapping[str, torch.Tensor], outputs: Sequence[str]) -> list[torch.Tensor]:
        """Values of ``outputs`` given the placeholders' ``feeds`` (only the nodes they need run)."""
        values: dict[str, Any] = dict(feeds)

        def value(ref: str) -> Any:
            name = ref.partition(":")[0]
            if name not in values:
                stack = [name]
                while stack:  # iterative post-order: deep graphs must not hit Python's recursion limit
                    current = stack[-1]
                    node = self.nodes.get(current)
                    if node is None:
                        raise TeacherError(f"the teacher graph has no node {current!r}")
                    if node.op == "Const":
                        values[current] = self.weights[current]
                        stack.pop()
                        continue
                    if node.op == "Placeholder":
                        raise TeacherError(f"placeholder {current!r} was not fed")
                    pending = [i.partition(":")[0] for i in node.inputs if i.partition(":")[0] not in values]
                    if pending:
                        stack.extend(pending)
                        continue
                    args = [_pick(values[i.partition(":")[0]], i) for i in node.inputs]
                    values[current] = OPS[node.op](node, args)
                    stack.pop()
            return _pick(values[name], ref)

        return [value(o) for o in outputs]


def _pick(value: Any, ref: str) -> Any:
    """Output ``k`` of a multi-output op for ``name:k`` (output 0 of a tuple otherwise)."""
    _, _, index = ref.partition(":")
    if isinstance(value, tuple):
        return value[int(index) if index else 0]
    return value

"""The teacher detector read from its TFJS graph: real people on a real frame, bad packages, op semantics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fslora.teacher import PersonTeacher, TeacherError, TFJSGraph, default_package_dir


def _package() -> Path:
    folder = default_package_dir()
    assert (folder / "centernet.json").is_file(), f"no teacher package at {folder} (./run.sh test fetches it)"
    return folder


def _frame(index: int) -> np.ndarray:
    video = os.environ.get("FSLORA_TEST_VIDEO", str(Path.home() / ".cache" / "fslora" / "vtest.avi"))
    cap = cv2.VideoCapture(video)
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_teacher_boxes_the_walking_people_of_a_real_frame() -> None:
    frame = _frame(300)
    boxes, scores = PersonTeacher.from_package(_package()).detect(frame, score_thresh=0.45)
    heights = boxes[:, 3] - boxes[:, 1]
    assert len(boxes) >= 6, (boxes, scores)
    assert ((heights >= 40) & (heights <= 250)).all()
    assert (boxes[:, :2] >= 0).all()
    assert (boxes[:, 2] <= frame.shape[1]).all() and (boxes[:, 3] <= frame.shape[0]).all()
    assert (np.diff(scores) <= 0).all()
    # the six people on the road of frame 300 stand between y = 150 and y = 300
    assert ((boxes[:, 1] > 140) & (boxes[:, 3] < 310)).sum() >= 6


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match=str(tmp_path / "nowhere")):
        PersonTeacher.from_package(tmp_path / "nowhere")


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    source = _package()
    shutil.copy(source / "centernet.json", tmp_path / "centernet.json")
    blob = (source / "centernet.bin").read_bytes()
    (tmp_path / "centernet.bin").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TeacherError, match="too short"):
        PersonTeacher.from_package(tmp_path)


def _attr_ints(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _attr_str(text: str) -> dict:
    import base64

    return {"s": base64.b64encode(text.encode()).decode()}


def _write_graph(folder: Path, nodes: list[dict], weights: dict[str, np.ndarray]) -> Path:
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": k, "shape": list(v.shape), "dtype": "float32" if v.dtype == np.float32 else "int32"}
        for k, v in weights.items()
    ]}]
    (folder / "w.bin").write_bytes(b"".join(v.astype("<f4" if v.dtype == np.float32 else "<i4").tobytes()
                                            for v in weights.values()))
    const = [{"name": k, "op": "Const", "attr": {}} for k in weights]
    path = folder / "model.json"
    path.write_text(json.dumps({"modelTopology": {"node": const + nodes}, "weightsManifest": manifest}))
    return path


def test_an_unsupported_op_is_named(tmp_path: Path) -> None:
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Softplus", "input": ["x"]}]
    with pytest.raises(TeacherError, match="Softplus"):
        TFJSGraph.load(_write_graph(tmp_path, nodes, {}))


def test_convolutions_follow_tf_layouts_and_same_padding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO
    b1 = rng.normal(size=(4,)).astype(np.float32)
    dw = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)  # [H, W, in, multiplier]
    axes = np.array([1, 2], np.int32)
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "c", "op": "_FusedConv2D", "input": ["x", "w1", "b1"], "attr": {
            "strides": _attr_ints([1, 2, 2, 1]), "padding": _attr_str("SAME"),
            "fused_ops": {"list": {"s": [_attr_str("BiasAdd")["s"], _attr_str("Relu")["s"]]}}}},
        {"name": "d", "op": "DepthwiseConv2dNative", "input": ["c", "dw"], "attr": {
            "strides": _attr_ints([1, 1, 1, 1]), "padding": _attr_str("SAME")}},
        {"name": "m", "op": "Mean", "input": ["d", "axes"], "attr": {"keep_dims": {"b": False}}},
    ]
    graph = TFJSGraph.load(_write_graph(tmp_path, nodes, {"w1": w1, "b1": b1, "dw": dw, "axes": axes}))
    x = torch.from_numpy(rng.normal(size=(1, 6, 6, 2)).astype(np.float32))
    (got,) = graph.run({"x": x}, ["m"])
    # reference: TF SAME at stride 2 on 6 px pads 0 before, 1 after; depthwise at stride 1 pads 1 each side
    xc = F.pad(x.permute(0, 3, 1, 2), [0, 1, 0, 1])
    y = F.relu(F.conv2d(xc, torch.from_numpy(w1).permute(3, 2, 0, 1), torch.from_numpy(b1), stride=2))
    y = F.conv2d(F.pad(y, [1, 1, 1, 1]), torch.from_numpy(dw).permute(2, 3, 0, 1), groups=4)
    assert got.shape == (1, 4)
    torch.testing.assert_close(got, y.mean(dim=(2, 3)), rtol=1e-5, atol=1e-5)

"""The teacher detector read from its TFJS graph: real people on a real frame, bad packages, op semantics."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fslora.teacher import PersonTeacher, TeacherError, TFJSGraph, default_package_dir

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _package() -> Path:
    folder = default_package_dir()
    for name in ("centernet.json", "centernet.bin"):
        assert (folder / name).is_file(), (
            f"no teacher package at {folder}: {name} missing (./run.sh test fetches it; FSLORA_TEACHER_DIR)"
        )
    return folder


def _frame(index: int) -> np.ndarray:
    video = Path(os.environ.get("FSLORA_TEST_VIDEO") or Path.home() / ".cache" / "fslora" / "vtest.avi")
    assert video.is_file(), f"test video {video} is missing (set FSLORA_TEST_VIDEO)"
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = cap.read()
    cap.release()
    assert ok, f"cannot read frame {index} of {video}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_teacher_boxes_the_walking_people_of_a_real_frame() -> None:
    frame = _frame(300)  # 6 people walking, 65-80 px tall; a sign post is the usual false box
    boxes, scores = PersonTeacher.from_package(_package()).detect(frame, score_thresh=0.3)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and boxes.shape == (len(scores), 4)
    heights = boxes[:, 3] - boxes[:, 1]
    assert ((heights >= 40) & (heights <= 250)).sum() >= 6, (boxes, scores)
    assert (scores >= 0.3).all() and (np.diff(scores) <= 0).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes[:, 2] <= frame.shape[1]).all() and (boxes[:, 3] <= frame.shape[0]).all()


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match=str(tmp_path / "nowhere")):
        PersonTeacher.from_package(tmp_path / "nowhere")


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    source = _package()
    shutil.copy(source / "centernet.json", tmp_path / "centernet.json")
    blob = (source / "centernet.bin").read_bytes()
    (tmp_path / "centernet.bin").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TeacherError, match=f"hold {len(blob) // 2} bytes but the manifest needs {len(blob)}"):
        PersonTeacher.from_package(tmp_path)


def _ints(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_graph(folder: Path, nodes: list[dict], weights: dict[str, np.ndarray]) -> Path:
    """A model.json + w.bin as the TFJS converter writes them (float32 weights stored as float16)."""
    entries, blobs = [], []
    for name, value in weights.items():
        entry = {"name": name, "shape": list(value.shape), "dtype": "int32"}
        if value.dtype == np.float32:
            entry |= {"dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}}
            blobs.append(value.astype("<f2").tobytes())
        else:
            blobs.append(value.astype("<i4").tobytes())
        entries.append(entry)
    (folder / "w.bin").write_bytes(b"".join(blobs))
    const = [{"name": k, "op": "Const", "attr": {}} for k in weights]
    path = folder / "model.json"
    topology = {"node": const + nodes}
    manifest = [{"paths": ["w.bin"], "weights": entries}]
    path.write_text(json.dumps({"modelTopology": topology, "weightsManifest": manifest}))
    return path


def test_an_unsupported_op_is_named(tmp_path: Path) -> None:
    nodes = [{"name": "x", "op": "Placeholder"}, {"name": "y", "op": "Softplus", "input": ["x"]}]
    with pytest.raises(TeacherError, match="Softplus"):
        TFJSGraph.load(_write_graph(tmp_path, nodes, {}))


def _f16(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Random float32 values exactly representable in float16 (the graph stores them so)."""
    return rng.normal(size=shape).astype(np.float16).astype(np.float32)


def test_convolutions_follow_tf_layouts_and_same_padding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = _f16(rng, 3, 2, 2, 4)  # HWIO, a 3x2 kernel so that swapped H / W axes show
    b1 = _f16(rng, 4)
    dw = _f16(rng, 3, 3, 4, 2)  # [H, W, in, multiplier]
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "c", "op": "_FusedConv2D", "input": ["x", "w1", "b1"], "attr": {
            "strides": _ints([1, 2, 2, 1]), "padding": {"s": _b64("SAME")}, "num_args": {"i": "1"},
            "fused_ops": {"list": {"s": [_b64("BiasAdd"), _b64("Relu")]}}}},
        {"name": "d", "op": "DepthwiseConv2dNative", "input": ["c", "dw", "^x"], "attr": {
            "strides": _ints([1, 1, 1, 1]), "padding": {"s": _b64("SAME")}}},
        {"name": "m", "op": "Mean", "input": ["d", "axes"], "attr": {"keep_dims": {"b": False}}},
    ]
    graph = TFJSGraph.load(_write_graph(tmp_path, nodes, {"w1": w1, "b1": b1, "dw": dw,
                                                          "axes": np.array([1, 2], np.int32)}))
    x = rng.normal(size=(1, 6, 5, 2)).astype(np.float32)
    got_d, got_m = graph.run({"x": torch.from_numpy(x)}, ["d", "m"])

    # reference by hand, NHWC, float64. TF SAME, stride 2: H 6, k 3 -> total 1 -> pad (0, 1);
    # W 5, k 2 -> total 1 -> pad (0, 1): the odd pixel goes after (torch's symmetric padding differs).
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 1), (0, 1), (0, 0)])
    c = np.zeros((1, 3, 3, 4))
    for i in range(3):
        for j in range(3):
            c[0, i, j] = np.einsum("hwc,hwco->o", xp[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 2], w1)
    c = np.maximum(c + b1, 0)
    cp = np.pad(c, [(0, 0), (1, 1), (1, 1), (0, 0)])  # stride 1, k 3 -> pad (1, 1)
    d = np.zeros((1, 3, 3, 8))  # depthwise output channel = in_channel * multiplier + m
    for i in range(3):
        for j in range(3):
            d[0, i, j] = np.einsum("hwc,hwcm->cm", cp[0, i : i + 3, j : j + 3], dw).reshape(-1)
    torch.testing.assert_close(got_d, torch.from_numpy(d).float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_m, torch.from_numpy(d.mean(axis=(1, 2))).float(), rtol=1e-4, atol=1e-4)


def test_resize_bilinear_is_tf_legacy_sampling(tmp_path: Path) -> None:
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "r", "op": "ResizeBilinear", "input": ["x", "size"],
         "attr": {"align_corners": {"b": False}, "half_pixel_centers": {"b": False}}},
    ]
    graph = TFJSGraph.load(_write_graph(tmp_path, nodes, {"size": np.array([1, 4], np.int32)}))
    (got,) = graph.run({"x": torch.tensor([[[[0.0], [1.0]]]])}, ["r"])
    # src = dst * 2 / 4 = 0, 0.5, 1, 1.5; the last clamps to the edge (half-pixel would give .25 .75 ...)
    torch.testing.assert_close(got.reshape(-1), torch.tensor([0.0, 0.5, 1.0, 1.0]))

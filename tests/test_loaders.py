"""CUHK-SYSU, PRW and PoseTrack21 loaders on tiny fixtures written in the datasets' own formats."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from fslora.data.cuhk_sysu import load_cuhk_sysu
from fslora.data.posetrack21 import load_posetrack21
from fslora.data.prw import load_prw, parse_frame_name
from fslora.evaluation.protocols import evaluate_split

# ---------------------------------------------------------------- MATLAB layouts


def struct(rows: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array (what scipy writes for a numpy record array of objects)."""
    fields = list(rows[0])
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row[f]
    return arr


def cell(items: list) -> np.ndarray:
    """An Nx1 MATLAB cell array."""
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


def xywh(*v: float) -> np.ndarray:
    return np.array([v], dtype=np.float64)


def image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)


# ---------------------------------------------------------------- CUHK-SYSU

# Identities: p1, p2 train (Train.mat); p3, p4 test. Boxes as x, y, w, h.
B = {
    "p1@s1": (10, 10, 20, 40), "u@s1": (40, 5, 15, 30), "zero@s1": (1, 1, 0, 30),
    "p1@s2": (5, 5, 20, 40), "p2@s2": (30, 5, 20, 40),
    "p3@s3": (5, 5, 20, 40), "p4@s3": (30, 5, 20, 40),
    "p3@s4": (10, 5, 20, 40), "u@s4": (40, 5, 10, 20),
    "p4@s5": (12, 8, 20, 40),
}  # fmt: skip


def scene(imname: str, key: str) -> dict:
    return {"imname": imname, "idlocate": xywh(*B[key]), "ishard": 0.0}


def write_cuhk(root: Path) -> None:
    ann = root / "annotation"
    (ann / "test" / "train_test").mkdir(parents=True)
    sizes = {
        "s1.jpg": (64, 48),
        "s2.jpg": (60, 50),
        "s3.jpg": (64, 48),
        "s4.jpg": (70, 52),
        "s5.jpg": (64, 48),
    }
    for name, size in sizes.items():
        image(root / "Image" / "SSM" / name, size)
    per_image = {
        "s1.jpg": ["p1@s1", "u@s1", "zero@s1"],
        "s2.jpg": ["p1@s2", "p2@s2"],
        "s3.jpg": ["p3@s3", "p4@s3"],
        "s4.jpg": ["p3@s4", "u@s4"],
        "s5.jpg": ["p4@s5"],
    }
    img = struct(
        [
            {
                "imname": n,
                "nAppear": float(len(k)),
                "box": struct([{"idlocate": xywh(*B[x]), "ishard": 0.0} for x in k]),
            }
            for n, k in per_image.items()
        ]
    )
    savemat(ann / "Images.mat", {"Img": img})
    savemat(ann / "pool.mat", {"pool": cell(["s3.jpg", "s4.jpg", "s5.jpg"])})

    def identity(idname: str, scenes: list[tuple[str, str]]) -> dict:
        return {
            "idname": idname,
            "nAppear": float(len(scenes)),
            "scene": struct([scene(n, k) for n, k in scenes]),
        }

    p1 = identity("p1", [("s1.jpg", "p1@s1"), ("s2.jpg", "p1@s2")])
    p2 = identity("p2", [("s2.jpg", "p2@s2")])
    p3 = identity("p3", [("s3.jpg", "p3@s3"), ("s4.jpg", "p3@s4")])
    p4 = identity("p4", [("s5.jpg", "p4@s5")])  # Person.mat "forgets" p4 in s3; TestG50 knows it
    savemat(ann / "test" / "train_test" / "Train.mat", {"Train": cell([struct([p1]), struct([p2])])})
    savemat(ann / "Person.mat", {"Person": struct([p1, p2, p3, p4])})

    empty = np.zeros((0, 0))
    queries = [
        {
            "Query": struct([{**scene("s3.jpg", "p3@s3"), "idname": "p3"}]),
            "Gallery": struct(
                [scene("s4.jpg", "p3@s4"), {"imname": "s5.jpg", "idlocate": empty, "ishard": empty}]
            ),
        },
        {
            "Query": struct([{**scene("s5.jpg", "p4@s5"), "idname": "p4"}]),
            "Gallery": struct(
                [scene("s3.jpg", "p4@s3"), {"imname": "s4.jpg", "idlocate": empty, "ishard": empty}]
            ),
        },
    ]
    savemat(ann / "test" / "train_test" / "TestG50.mat", {"TestG50": struct(queries)})


def xyxy(key: str) -> tuple[float, ...]:
    x, y, w, h = B[key]
    return (x, y, x + w, y + h)


def test_cuhk_sysu_round_trip(tmp_path):
    write_cuhk(tmp_path)
    split = load_cuhk_sysu(tmp_path, gallery_size=50)
    ssm = tmp_path / "Image" / "SSM"
    assert [Path(r.image_path).name for r in split.images] == ["s1.jpg", "s2.jpg"]
    assert [Path(r.image_path).name for r in split.gallery] == ["s3.jpg", "s4.jpg", "s5.jpg"]
    s1, s2 = split.images
    # x, y, w, h -> x1, y1, x2, y2; the zero-width box is dropped; Train.mat order gives pids 0, 1.
    assert [(p.box, p.pid) for p in s1.persons] == [(xyxy("p1@s1"), 0), (xyxy("u@s1"), -1)]
    assert [p.pid for p in s2.persons] == [0, 1]
    assert (s2.width, s2.height, s2.camera, s2.frame) == (60, 50, 0, None)
    # Test pids are positions in Person.mat (p3 -> 2, p4 -> 3); TestG50 adds p4's box in s3.
    s3, s4, s5 = split.gallery
    assert [p.pid for p in s3.persons] == [2, 3]
    assert [p.pid for p in s4.persons] == [2, -1]
    assert (s4.width, s4.height) == (70, 52)
    assert [(q.image_path, q.box, q.pid, q.camera) for q in split.queries] == [
        (str(ssm / "s3.jpg"), xyxy("p3@s3"), 2, 0),
        (str(ssm / "s5.jpg"), xyxy("p4@s5"), 3, 0),
    ]
    assert split.query_gallery == [[1, 2], [0, 1]]  # indices into split.gallery
    assert split.meta["gallery_size"] == 50


def perfect_detections(records, dim: int = 8) -> dict:
    """Ground-truth boxes as detections, each embedded as a one-hot of its pid (unlabelled: last slot)."""
    out = {}
    for r in records:
        embs = torch.zeros(len(r.persons), dim)
        for i, p in enumerate(r.persons):
            embs[i, p.pid if p.pid >= 0 else dim - 1] = 1.0
        boxes = torch.tensor([p.box for p in r.persons]).reshape(-1, 4)
        out[r.image_path] = {"boxes": boxes, "scores": torch.ones(len(r.persons)), "embeddings": embs}
    return out


def one_hot_queries(queries, dim: int = 8) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor([q.pid for q in queries]), dim).float()


def test_cuhk_sysu_loader_feeds_the_protocol(tmp_path):
    write_cuhk(tmp_path)
    split = load_cuhk_sysu(tmp_path, gallery_size=50)
    result = evaluate_split(split, perfect_detections(split.gallery), one_hot_queries(split.queries))
    assert result["mAP"] == pytest.approx(1.0) and result["top1"] == 1.0
    assert result["num_queries"] == 2 and result["det_recall"] == pytest.approx(1.0)


def test_cuhk_sysu_errors_name_the_file(tmp_path):
    write_cuhk(tmp_path)
    with pytest.raises(FileNotFoundError, match="TestG100.mat"):
        load_cuhk_sysu(tmp_path)  # default gallery size 100; the fixture has only TestG50
    with pytest.raises(ValueError, match="gallery_size"):
        load_cuhk_sysu(tmp_path, gallery_size=77)
    ann = tmp_path / "annotation"
    (ann / "Person.mat").write_bytes(b"this is not a mat file")
    with pytest.raises(ValueError, match=r"Person\.mat.*not a readable MATLAB file"):
        load_cuhk_sysu(tmp_path, gallery_size=50)
    savemat(ann / "Person.mat", {"People": np.zeros(1)})
    with pytest.raises(ValueError, match=r"Person\.mat.*expected the variable 'Person'"):
        load_cuhk_sysu(tmp_path, gallery_size=50)
    savemat(
        ann / "Images.mat",
        {"Img": struct([{"imname": "s1.jpg", "nAppear": 1.0, "box": struct([{"ishard": 0.0}])}])},
    )
    with pytest.raises(ValueError, match=r"Images\.mat.*no field 'idlocate'"):
        load_cuhk_sysu(tmp_path, gallery_size=50)
    (ann / "Images.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"Images\.mat"):
        load_cuhk_sysu(tmp_path, gallery_size=50)


def test_cuhk_sysu_missing_image_and_unknown_pool_entry(tmp_path):
    write_cuhk(tmp_path)
    (tmp_path / "Image" / "SSM" / "s2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="s2.jpg"):
        load_cuhk_sysu(tmp_path, gallery_size=50)
    savemat(tmp_path / "annotation" / "pool.mat", {"pool": cell(["s3.jpg", "s9.jpg"])})
    with pytest.raises(ValueError, match=r"pool\.mat.*s9\.jpg"):
        load_cuhk_sysu(tmp_path, gallery_size=50)


# ---------------------------------------------------------------- PRW


def write_prw(root: Path) -> None:
    train, test = ["c1s1_000010"], ["c1s1_000020", "c2s1_000030", "c3s2_000040"]
    for name in train + test:
        image(root / "frames" / f"{name}.jpg", (96, 54))
    (root / "annotations").mkdir()
    boxes = {  # [id, x, y, w, h]; -2 = unlabelled
        "c1s1_000010": ("box_new", [[1, 10, 5, 20, 40], [-2, -3, 4, 20, 40]]),
        "c1s1_000020": ("anno_file", [[7, 10, 5, 20, 40], [-2, 50, 5, 20, 40]]),
        "c2s1_000030": ("box_new", [[7, 30, 6, 20, 40]]),  # one person: a 1x5 array
        "c3s2_000040": ("anno_previous", [[7, 40, 8, 22, 44], [8, 5, 5, 20, 40]]),
    }
    for name, (key, rows) in boxes.items():
        savemat(root / "annotations" / f"{name}.jpg.mat", {key: np.array(rows, dtype=np.float64)})
    savemat(root / "frame_train.mat", {"img_index_train": cell(train)})
    savemat(root / "frame_test.mat", {"img_index_test": cell(test)})
    # The real file has Windows line endings and names without .jpg.
    (root / "query_info.txt").write_bytes(b"7 10 5 20 40 c1s1_000020\r\n8 5.5 5 20 40 c3s2_000040\r\n")


def test_prw_round_trip(tmp_path):
    write_prw(tmp_path)
    split = load_prw(tmp_path)
    (train,) = split.images
    assert (train.camera, train.frame, train.width, train.height) == (1, 10, 96, 54)
    # Negative x is clipped to 0; -2 becomes -1.
    assert [(p.box, p.pid) for p in train.persons] == [((10, 5, 30, 45), 1), ((0, 4, 17, 44), -1)]
    assert [Path(r.image_path).name for r in split.gallery] == [
        "c1s1_000020.jpg",
        "c2s1_000030.jpg",
        "c3s2_000040.jpg",
    ]
    assert [r.camera for r in split.gallery] == [1, 2, 3]
    assert [[p.pid for p in r.persons] for r in split.gallery] == [[7, -1], [7], [7, 8]]
    assert split.gallery[2].persons[0].box == (40, 8, 62, 52)
    assert split.query_gallery is None
    q1, q2 = split.queries
    assert (Path(q1.image_path).name, q1.box, q1.pid, q1.camera, q1.frame) == (
        "c1s1_000020.jpg",
        (10, 5, 30, 45),
        7,
        1,
        20,
    )
    assert (q2.box, q2.pid, q2.camera) == ((5.5, 5, 25.5, 45), 8, 3)


def test_prw_loader_feeds_the_protocol(tmp_path):
    write_prw(tmp_path)
    split = load_prw(tmp_path)
    dets = perfect_detections(split.gallery, dim=16)
    q = one_hot_queries(split.queries, dim=16)
    result = evaluate_split(split, dets, q)
    # Query 7 (camera 1) finds its cameras-2 and 3 occurrences; query 8 has no other occurrence.
    assert result["mAP"] == pytest.approx(1.0)
    assert (result["num_queries"], result["num_queries_without_gt"]) == (1, 1)
    assert evaluate_split(split, dets, q, exclude_camera=True)["mAP"] == pytest.approx(1.0)


def test_prw_frame_names():
    assert parse_frame_name("c6s4_002345.jpg") == (6, 4, 2345)
    assert parse_frame_name("frames/c1s1_000151") == (1, 1, 151)
    with pytest.raises(ValueError, match="c<cam>s<seq>_<frame>"):
        parse_frame_name("frame_0001.jpg")


def test_prw_errors_name_the_file(tmp_path):
    write_prw(tmp_path)
    ann = tmp_path / "annotations" / "c2s1_000030.jpg.mat"
    savemat(ann, {"boxes": np.zeros((1, 5))})
    with pytest.raises(ValueError, match=r"c2s1_000030\.jpg\.mat.*box_new"):
        load_prw(tmp_path)
    savemat(ann, {"box_new": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"c2s1_000030\.jpg\.mat.*N x 5"):
        load_prw(tmp_path)
    ann.unlink()
    with pytest.raises(FileNotFoundError, match=r"c2s1_000030\.jpg\.mat"):
        load_prw(tmp_path)


def test_prw_bad_query_line_and_split_file(tmp_path):
    write_prw(tmp_path)
    (tmp_path / "query_info.txt").write_text("7 10 5 20 40 c1s1_000020\n8 5 5 20 c3s2_000040\n")
    with pytest.raises(ValueError, match=r"query_info\.txt:2"):
        load_prw(tmp_path)
    savemat(tmp_path / "frame_test.mat", {"img_index": cell(["c1s1_000020"])})
    with pytest.raises(ValueError, match=r"frame_test\.mat.*img_index_test"):
        load_prw(tmp_path)


# ---------------------------------------------------------------- PoseTrack21


def write_posetrack(root: Path) -> None:
    folder = root / "posetrack_person_search"
    folder.mkdir(parents=True)
    frames = {
        "images/train/000001_bonn_train/000000.jpg": (80, 60),
        "images/val/000342_mpii_test/000000.jpg": (80, 60),
        "images/val/000342_mpii_test/000001.jpg": (80, 60),
        "images/val/000500_mpii_test/000007.jpg": (72, 64),
    }
    for rel, size in frames.items():
        image(root / rel, size)
    train = {
        "images": [{"id": 10, "file_name": "images/train/000001_bonn_train/000000.jpg", "vid_id": "000001"}],
        "annotations": [
            {"image_id": 10, "bbox": [5, 5, 20, 40], "person_id": 5, "track_id": 0},
            {"image_id": 10, "bbox": [30, 5, 20, 40], "track_id": 1},  # no person_id -> unlabelled
            {"image_id": 10, "bbox": [50, 5, 0, 40], "person_id": 6},  # empty box -> skipped
        ],
    }
    v342, v500 = "images/val/000342_mpii_test", "images/val/000500_mpii_test"
    val = {
        "images": [
            {"id": 20, "file_name": f"{v342}/000000.jpg", "vid_id": "000342", "width": 80, "height": 60},
            {"id": 21, "file_name": f"{v342}/000001.jpg", "vid_id": 342, "frame_index": 1},
            {"id": 22, "file_name": f"{v500}/000007.jpg"},  # the video number comes from the folder
        ],
        "annotations": [
            {"image_id": 20, "bbox": [5, 5, 20, 40], "person_id": 7},
            {"image_id": 21, "bbox": [8, 5, 20, 40], "person_id": 7},
            {"image_id": 22, "bbox": [9, 6, 20, 40], "person_id": 7},
            {"image_id": 22, "bbox": [40, 6, 20, 40], "person_id": -1},
        ],
    }  # fmt: skip
    query = {
        "images": [{"id": 20, "file_name": "images/val/000342_mpii_test/000000.jpg", "vid_id": "000342"}],
        "annotations": [{"image_id": 20, "bbox": [5, 5, 20, 40], "person_id": 7}],
    }
    for name, data in (("train", train), ("val", val), ("query", query)):
        (folder / f"{name}.json").write_text(json.dumps(data))


def test_posetrack21_round_trip(tmp_path):
    write_posetrack(tmp_path)
    split = load_posetrack21(tmp_path)
    (train,) = split.images
    assert train.image_path == str(tmp_path / "images/train/000001_bonn_train/000000.jpg")
    assert [(p.box, p.pid) for p in train.persons] == [((5, 5, 25, 45), 5), ((30, 5, 50, 45), -1)]
    assert (train.camera, train.frame, train.width, train.height) == (1, 0, 80, 60)
    assert [(r.camera, r.frame) for r in split.gallery] == [(342, 0), (342, 1), (500, 7)]
    assert (split.gallery[2].width, split.gallery[2].height) == (72, 64)  # read from the image header
    assert [[p.pid for p in r.persons] for r in split.gallery] == [[7], [7], [7, -1]]
    (q,) = split.queries
    assert (q.image_path, q.box, q.pid, q.camera, q.frame) == (
        split.gallery[0].image_path,
        (5, 5, 25, 45),
        7,
        342,
        0,
    )
    dets, q_emb = perfect_detections(split.gallery, dim=16), one_hot_queries(split.queries, dim=16)
    result = evaluate_split(split, dets, q_emb)
    assert result["mAP"] == pytest.approx(1.0) and result["num_queries"] == 1


def test_posetrack21_alternative_annotation_folder(tmp_path):
    write_posetrack(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "posetrack_person_search").rename(tmp_path / "annotations" / "posetrack_person_search")
    assert len(load_posetrack21(tmp_path).gallery) == 3


def test_posetrack21_errors_name_the_file(tmp_path):
    write_posetrack(tmp_path)
    folder = tmp_path / "posetrack_person_search"
    (folder / "val.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"val\.json.*not valid json"):
        load_posetrack21(tmp_path)
    (folder / "val.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"val\.json.*'annotations'"):
        load_posetrack21(tmp_path)
    (folder / "val.json").write_text(
        json.dumps({"images": [], "annotations": [{"image_id": 3, "bbox": [0, 0, 1, 1]}]})
    )
    with pytest.raises(ValueError, match=r"val\.json.*annotations\[0\]"):
        load_posetrack21(tmp_path)
    (folder / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.json"):
        load_posetrack21(tmp_path)
    with pytest.raises(FileNotFoundError, match="no annotation folder"):
        load_posetrack21(tmp_path / "elsewhere")

"""CUHK-SYSU loader: the original MATLAB annotations -> shared person-search records.

On-disk layout (as distributed by the dataset's authors)::

    <root>/Image/SSM/*.jpg
    <root>/annotation/Images.mat            Img: 1xN struct (imname, nAppear, box)
                                                 box: 1xK struct (idlocate = [x y w h], ishard)
    <root>/annotation/Person.mat            Person: 1xP struct (idname, nAppear, scene)
                                                 scene: 1xK struct (imname, idlocate, ishard)
    <root>/annotation/pool.mat              pool: Mx1 cell of test image names
    <root>/annotation/test/train_test/Train.mat       Train: Tx1 cell, each a 1x1 struct like Person's
    <root>/annotation/test/train_test/TestG{N}.mat    TestG{N}: 1xQ struct (Query, Gallery)
                                                 Query: 1x1 struct (imname, idlocate, ishard, idname)
                                                 Gallery: 1xN struct (imname, idlocate, ishard);
                                                 idlocate is empty where the query person is absent

Decisions (ours):
- Boxes are x, y, w, h; a few have zero width or height (annotation errors) and are dropped.
- Training images = all images not in pool.mat; their pids are the identity's position in Train.mat
  (0..5531, contiguous, so they index OIM's lookup table directly).
- Test images = pool.mat; their pids are the identity's position in Person.mat. A query's pid comes
  from its `idname` through Person.mat. The TestG file is the protocol's authority: a gallery box it
  assigns to the query identity gets that pid even where Person.mat disagrees.
- CUHK-SYSU has no cameras: camera = 0, frame = None. Image sizes are read from the JPEG headers.
- Every query's gallery is its TestG{N} list, as indices into `split.gallery`
  (`PersonSearchSplit.query_gallery`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.io import loadmat

from fslora.data.records import ImageRecord, PersonBox, PersonSearchSplit, QueryRecord

__all__ = ["GALLERY_SIZES", "load_cuhk_sysu"]

logger = logging.getLogger(__name__)

GALLERY_SIZES: tuple[int, ...] = (50, 100, 500, 1000, 2000, 4000)
_BOX_TOLERANCE = 0.5  # px: the same box written by two annotation files


class _MatFile:
    """One CUHK-SYSU .mat file; its helpers raise ValueErrors that name the file and the entry."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"CUHK-SYSU annotation file not found: {path}")
        try:  # structs become dicts, cells arrays (scipy's simplify_cells)
            data = loadmat(path, simplify_cells=True)
        except Exception as exc:  # scipy raises several types for corrupt files
            raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from exc
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__"))
            raise ValueError(f"{path}: expected the variable {key!r}, found {found}")
        self.value = data[key]

    def fail(self, message: str) -> ValueError:
        return ValueError(f"{self.path}: {message}")

    def structs(self, value: Any, what: str) -> list[dict[str, Any]]:
        """A struct array (or a cell of 1x1 structs) as a list of dicts."""
        try:
            items = [x for item in _as_list(value) for x in (_as_list(item) if _is_array(item) else [item])]
        except TypeError as exc:
            raise self.fail(f"{what} is not a struct array ({exc})") from exc
        if not all(isinstance(item, dict) for item in items):
            raise self.fail(f"{what} must be a struct array")
        return items

    def get(self, entry: Mapping[str, Any], name: str, what: str) -> Any:
        if name not in entry:
            raise self.fail(f"{what} has no field {name!r} (fields: {sorted(entry)})")
        return entry[name]

    def text(self, entry: Mapping[str, Any], name: str, what: str) -> str:
        value = self.get(entry, name, what)
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if not isinstance(value, str) or not value:
            raise self.fail(f"{what}.{name} must be a non-empty string, got {value!r}")
        return value

    def xywh(self, entry: Mapping[str, Any], what: str) -> np.ndarray | None:
        """`idlocate` as x, y, w, h; None for MATLAB's empty [] or a zero-size box."""
        arr = np.asarray(self.get(entry, "idlocate", what), dtype=np.float64).ravel()
        if arr.size == 0:
            return None
        if arr.size != 4:
            raise self.fail(f"{what}.idlocate must hold x, y, w, h; got {arr.size} values")
        return arr if arr[2] > 0 and arr[3] > 0 else None


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _as_list(value: Any) -> list[Any]:
    """A MATLAB array after simplify_cells: 1-element arrays arrive unwrapped, others as ndarrays."""
    if isinstance(value, (dict, str)):
        return [value]
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    if isinstance(value, list):
        return value
    raise TypeError(type(value).__name__)


def _xyxy(xywh: np.ndarray) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in xywh)
    return (x, y, x + w, y + h)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; the records need them and the .mat files lack them."""
    if not path.is_file():
        raise FileNotFoundError(f"CUHK-SYSU image not found: {path}")
    with Image.open(path) as im:
        return im.size


@dataclass
class _ImageBoxes:
    """Valid x, y, w, h boxes of one image and the pid assigned to each so far."""

    boxes: np.ndarray  # (K, 4)
    pids: list[int]

    def find(self, xywh: np.ndarray) -> int | None:
        if self.boxes.shape[0] == 0:
            return None
        err = np.abs(self.boxes - xywh).max(axis=1)
        best = int(np.argmin(err))
        return best if err[best] <= _BOX_TOLERANCE else None


def _read_images(path: Path) -> dict[str, _ImageBoxes]:
    mat = _MatFile(path, "Img")
    images: dict[str, _ImageBoxes] = {}
    for i, entry in enumerate(mat.structs(mat.value, "Img")):
        name = mat.text(entry, "imname", f"Img({i + 1})")
        boxes = [mat.xywh(box, f"{name} box") for box in mat.structs(mat.get(entry, "box", name), name)]
        arr = np.array([b for b in boxes if b is not None], dtype=np.float64).reshape(-1, 4)
        images[name] = _ImageBoxes(arr, [-1] * arr.shape[0])
    return images


def _label(mat: _MatFile, images: Mapping[str, _ImageBoxes], allowed: set[str]) -> dict[str, int]:
    """Give each identity's appearances in `allowed` images its index as pid; returns idname -> pid."""
    pid_of: dict[str, int] = {}
    for pid, person in enumerate(mat.structs(mat.value, "identity list")):
        idname = mat.text(person, "idname", f"identity {pid + 1}")
        pid_of[idname] = pid
        for scene in mat.structs(mat.get(person, "scene", idname), f"{idname}.scene"):
            imname = mat.text(scene, "imname", f"{idname}.scene")
            xywh = mat.xywh(scene, f"{idname} in {imname}")
            if imname not in allowed or xywh is None:
                continue
            k = images[imname].find(xywh)
            if k is None:
                raise mat.fail(f"box {xywh.tolist()} of {idname} is not among the boxes of {imname}")
            images[imname].pids[k] = pid
    return pid_of


def _read_protocol(
    mat: _MatFile, images: Mapping[str, _ImageBoxes], pid_of: Mapping[str, int], test_names: list[str]
) -> tuple[list[tuple[str, np.ndarray, int]], list[list[int]]]:
    """Queries as (image name, x y w h, pid) and each query's gallery as indices into `test_names`.

    The protocol is the authority: gallery boxes it gives the query identity take that pid.
    """
    gallery_index = {name: i for i, name in enumerate(test_names)}
    queries, galleries = [], []
    relabelled = 0
    for qi, item in enumerate(mat.structs(mat.value, "protocol")):
        where = f"query {qi + 1}"
        query = mat.structs(mat.get(item, "Query", where), f"{where}.Query")[0]
        q_name = mat.text(query, "imname", where)
        idname = mat.text(query, "idname", where)
        q_box = mat.xywh(query, where)
        if idname not in pid_of:
            raise mat.fail(f"{where}: identity {idname!r} is not in Person.mat")
        if q_box is None:
            raise mat.fail(f"{where}: empty or zero-size idlocate")
        pid = pid_of[idname]
        queries.append((q_name, q_box, pid))
        members = []
        for entry in mat.structs(mat.get(item, "Gallery", where), f"{where}.Gallery"):
            g_name = mat.text(entry, "imname", f"{where}.Gallery")
            if g_name not in gallery_index:
                raise mat.fail(f"{where}: gallery image {g_name} is not in pool.mat")
            members.append(gallery_index[g_name])
            g_box = mat.xywh(entry, f"{where} in {g_name}")
            if g_box is None:
                continue
            k = images[g_name].find(g_box)
            if k is None:
                raise mat.fail(f"{where}: gallery box {g_box.tolist()} is not among the boxes of {g_name}")
            if images[g_name].pids[k] != pid:
                images[g_name].pids[k] = pid
                relabelled += 1
        galleries.append(members)
    if relabelled:
        logger.warning("%s: %d gallery box(es) relabelled to match the protocol", mat.path, relabelled)
    return queries, galleries


def _records(root: Path, images: Mapping[str, _ImageBoxes], names: list[str]) -> list[ImageRecord]:
    records = []
    for name in names:
        item = images[name]
        path = root / "Image" / "SSM" / name
        width, height = _image_size(path)
        persons = tuple(PersonBox(_xyxy(b), pid) for b, pid in zip(item.boxes, item.pids, strict=True))
        records.append(ImageRecord(str(path), width, height, camera=0, persons=persons))
    return records


def load_cuhk_sysu(root: str | Path, gallery_size: int = 100) -> PersonSearchSplit:
    """Train images, test queries and test gallery of CUHK-SYSU with the TestG{gallery_size} protocol."""
    if gallery_size not in GALLERY_SIZES:
        raise ValueError(f"gallery_size must be one of {GALLERY_SIZES}; got {gallery_size}")
    root = Path(root)
    ann = root / "annotation"
    images = _read_images(ann / "Images.mat")
    pool = _MatFile(ann / "pool.mat", "pool")
    try:
        test_names = [str(n) for n in _as_list(pool.value)]
    except TypeError as exc:
        raise pool.fail(f"pool must be a cell array of image names ({exc})") from exc
    unknown = [n for n in test_names if n not in images]
    if unknown:
        raise pool.fail(f"{len(unknown)} test image(s) are missing from Images.mat, e.g. {unknown[0]}")
    test_set = set(test_names)
    train_names = [n for n in images if n not in test_set]

    _label(_MatFile(ann / "test" / "train_test" / "Train.mat", "Train"), images, set(train_names))
    pid_of = _label(_MatFile(ann / "Person.mat", "Person"), images, test_set)
    key = f"TestG{gallery_size}"
    protocol = _MatFile(ann / "test" / "train_test" / f"{key}.mat", key)
    queries, galleries = _read_protocol(protocol, images, pid_of, test_names)

    return PersonSearchSplit(
        name="cuhk_sysu",
        images=_records(root, images, train_names),
        queries=[
            QueryRecord(str(root / "Image" / "SSM" / name), _xyxy(box), pid, camera=0)
            for name, box, pid in queries
        ],
        gallery=_records(root, images, test_names),
        query_gallery=galleries,
        root=str(root),
        meta={"gallery_size": gallery_size, "protocol": key},
    )

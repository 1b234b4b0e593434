"""PRW (Person Re-identification in the Wild) loader: the original files -> shared person-search records.

On-disk layout (as distributed by the dataset's authors)::

    <root>/frames/c<cam>s<seq>_<frame>.jpg        1920x1080 video frames from 6 cameras
    <root>/annotations/<frame name>.jpg.mat       one variable, `box_new` (or, in some files, `anno_file`
                                                  / `anno_previous`): an N x 5 array [id, x, y, w, h]
    <root>/frame_train.mat                        img_index_train: Nx1 cell of frame names (no .jpg)
    <root>/frame_test.mat                         img_index_test:  Nx1 cell of frame names (no .jpg)
    <root>/query_info.txt                         one query a line: "pid x y w h name" (name without .jpg)

Decisions (ours):
- id -2 marks an unlabelled person -> pid -1; every other id is kept as it is (train and test ids do not
  overlap, and the trainer indexes OIM's table through `PersonSearchSplit.train_pids`).
- Some boxes start at negative coordinates: they are clipped at 0 (as the standard code does); boxes
  left with no width or height are dropped.
- camera and frame come from the name "c<cam>s<seq>_<frame>"; the test split is the whole-set gallery
  (`query_gallery = None`); the protocol excludes the query frame (and, multi-view, its camera).
- Image sizes are read from the JPEG headers (the annotations do not store them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import loadmat

from fslora.data.records import ImageRecord, PersonBox, PersonSearchSplit, QueryRecord

__all__ = ["BOX_KEYS", "load_prw", "parse_frame_name"]

BOX_KEYS: tuple[str, ...] = ("box_new", "anno_file", "anno_previous")
_NAME = re.compile(r"c(\d+)s(\d+)_(\d+)")


def parse_frame_name(name: str) -> tuple[int, int, int]:
    """(camera, sequence, frame) of a PRW frame name such as "c3s2_012345.jpg"."""
    match = _NAME.search(Path(name).name)
    if match is None:
        raise ValueError(f"PRW frame name {name!r} does not look like c<cam>s<seq>_<frame>")
    cam, seq, frame = (int(g) for g in match.groups())
    return cam, seq, frame


def _jpg(name: str) -> str:
    return name if name.lower().endswith(".jpg") else f"{name}.jpg"


def _load_mat(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise FileNotFoundError(f"PRW annotation file not found: {path}")
    try:
        return loadmat(path, simplify_cells=True)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: not a readable MATLAB file ({exc})") from exc


def _frame_names(path: Path, key: str) -> list[str]:
    data = _load_mat(path)
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{path}: expected the variable {key!r}, found {found}")
    value = data[key]
    names = [value] if isinstance(value, str) else list(np.asarray(value, dtype=object).ravel())
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{path}: {key} must be a cell array of frame names")
    return [_jpg(n) for n in names]


def _read_boxes(path: Path) -> list[PersonBox]:
    data = _load_mat(path)
    key = next((k for k in BOX_KEYS if k in data), None)
    if key is None:
        raise ValueError(f"{path}: none of the box variables {BOX_KEYS} found")
    arr = np.asarray(data[key], dtype=np.float64)
    if arr.size == 0:
        return []
    arr = np.atleast_2d(arr)  # a single person arrives as a 5-vector
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"{path}: {key} must be an N x 5 array [id, x, y, w, h]; got shape {arr.shape}")
    persons = []
    for pid, x, y, w, h in arr:
        x1, y1 = max(x, 0.0), max(y, 0.0)
        x2, y2 = x + w, y + h
        if x2 > x1 and y2 > y1:
            persons.append(PersonBox((x1, y1, x2, y2), -1 if pid < 0 else int(pid)))
    return persons


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; the records need them and the annotations lack them."""
    if not path.is_file():
        raise FileNotFoundError(f"PRW frame not found: {path}")
    with Image.open(path) as im:
        return im.size


def _records(root: Path, names: list[str]) -> list[ImageRecord]:
    records = []
    for name in names:
        cam, _, frame = parse_frame_name(name)
        image = root / "frames" / name
        width, height = _image_size(image)
        persons = tuple(_read_boxes(root / "annotations" / f"{name}.mat"))
        records.append(ImageRecord(str(image), width, height, cam, persons, frame=frame))
    return records


def _read_queries(root: Path) -> list[QueryRecord]:
    path = root / "query_info.txt"
    if not path.is_file():
        raise FileNotFoundError(f"PRW query file not found: {path}")
    queries = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise ValueError(f"{path}:{line_no}: expected 'pid x y w h name', got {line.strip()!r}")
        try:
            pid = int(float(fields[0]))
            x, y, w, h = (float(v) for v in fields[1:5])
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: bad number in {line.strip()!r}") from exc
        name = _jpg(fields[5])
        cam, _, frame = parse_frame_name(name)
        box = (max(x, 0.0), max(y, 0.0), x + w, y + h)
        try:
            queries.append(QueryRecord(str(root / "frames" / name), box, pid, cam, frame=frame))
        except ValueError as exc:
            raise ValueError(f"{path}:{line_no}: {exc}") from exc
    return queries


def load_prw(root: str | Path) -> PersonSearchSplit:
    """PRW's training frames, its 2057 queries and the test frames as the whole-set gallery."""
    root = Path(root)
    train = _frame_names(root / "frame_train.mat", "img_index_train")
    test = _frame_names(root / "frame_test.mat", "img_index_test")
    gallery = _records(root, test)
    return PersonSearchSplit(
        name="prw",
        images=_records(root, train),
        queries=_read_queries(root),
        gallery=gallery,
        query_gallery=None,
        root=str(root),
        meta={"cameras": sorted({r.camera for r in gallery})},
    )

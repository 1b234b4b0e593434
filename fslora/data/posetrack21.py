"""PoseTrack21 person-search loader: the COCO-like json files -> shared person-search records.

On-disk layout (PoseTrack21's own description of its person-search part)::

    <root>/images/{train,val}/<video>/<frame>.jpg
    <root>/posetrack_person_search/{train,val,query}.json

Each json holds "images" [{"id", "file_name" (relative to <root>), "vid_id", "frame_id", ...}] and
"annotations" [{"image_id", "bbox": [x, y, w, h], "person_id", "track_id", ...}] in the PoseTrack18 /
COCO layout. train.json is the training set, val.json the gallery, query.json the queries (one
annotation per query, its image listed in the same file).

What we assume, forgivingly (ours):
- The annotation folder is `<root>/posetrack_person_search` or `<root>/annotations/posetrack_person_search`
  (the layout some person-search codebases use); `anno_dir` overrides both.
- `person_id` is the identity across videos; a missing, null or negative one means unlabelled (-1).
  `track_id` is only unique inside a video, so it is never used as an identity.
- Annotations without a usable bbox (missing, or zero width / height) are skipped; images without any
  annotation stay (they are gallery frames too).
- camera = the video: `vid_id` as an int, else the leading digits of the video folder in `file_name`.
  frame = `frame_index` when given, else the digits of the file name ("000042.jpg" -> 42), else None.
- width / height come from the image entry when present, else from the image file's header.
- The protocol is PRW's: a query searches every gallery frame but its own (see `fslora.evaluation`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from fslora.data.records import ImageRecord, PersonBox, PersonSearchSplit, QueryRecord

__all__ = ["ANNOTATION_DIRS", "load_posetrack21", "read_posetrack21_json"]

ANNOTATION_DIRS: tuple[str, ...] = ("posetrack_person_search", "annotations/posetrack_person_search")
_DIGITS = re.compile(r"^(\d+)")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"PoseTrack21 annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid json ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a json object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing the list {key!r}")
    return data


def _camera(image: Mapping[str, Any], path: Path) -> int:
    vid = image.get("vid_id")
    if vid is not None and str(vid).strip().isdigit():
        return int(str(vid).strip())
    parent = Path(str(image["file_name"])).parent.name
    match = _DIGITS.match(parent)
    if match is None:
        raise ValueError(f"{path}: image {image['id']} has no vid_id and no video number in {parent!r}")
    return int(match.group(1))


def _frame(image: Mapping[str, Any]) -> int | None:
    if image.get("frame_index") is not None:
        return int(image["frame_index"])
    match = _DIGITS.match(Path(str(image["file_name"])).stem)
    return int(match.group(1)) if match else None


def _size(image: Mapping[str, Any], file: Path) -> tuple[int, int]:
    if image.get("width") and image.get("height"):
        return int(image["width"]), int(image["height"])
    if not file.is_file():
        raise FileNotFoundError(f"PoseTrack21 image not found: {file}")
    with Image.open(file) as im:
        return im.size


def _person(ann: Mapping[str, Any], where: str) -> PersonBox | None:
    """The annotation's person, or None when its bbox is missing or empty."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
        pid = ann.get("person_id")
        pid = -1 if pid is None or int(pid) < 0 else int(pid)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bbox and person_id must be numbers ({exc})") from exc
    if w <= 0 or h <= 0:
        return None
    return PersonBox((x, y, x + w, y + h), pid)


_People = list[tuple[int, PersonBox]]


def read_posetrack21_json(path: str | Path, root: str | Path) -> tuple[list[ImageRecord], _People]:
    """All images of one json file as records (image paths joined to `root`), plus every annotation as
    (index into the records, person) in file order - the queries, for query.json."""
    path, root = Path(path), Path(root)
    data = _read_json(path)
    index: dict[Any, int] = {}
    images: list[dict[str, Any]] = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ValueError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        index[image["id"]] = len(images)
        images.append(image)
    persons: list[list[PersonBox]] = [[] for _ in images]
    ordered: list[tuple[int, PersonBox]] = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in index:
            raise ValueError(f"{path}: annotations[{i}] refers to no listed image (image_id)")
        person = _person(ann, f"{path}: annotations[{i}]")
        if person is not None:
            persons[index[ann["image_id"]]].append(person)
            ordered.append((index[ann["image_id"]], person))
    records = []
    for image, people in zip(images, persons, strict=True):
        file = root / str(image["file_name"])
        width, height = _size(image, file)
        records.append(
            ImageRecord(str(file), width, height, _camera(image, path), tuple(people), frame=_frame(image))
        )
    return records, ordered


def _annotation_dir(root: Path, anno_dir: str | Path | None) -> Path:
    if anno_dir is not None:
        return root / anno_dir
    for candidate in ANNOTATION_DIRS:
        if (root / candidate).is_dir():
            return root / candidate
    raise FileNotFoundError(f"PoseTrack21: no annotation folder under {root} (looked for {ANNOTATION_DIRS})")


def load_posetrack21(root: str | Path, anno_dir: str | Path | None = None) -> PersonSearchSplit:
    """Training images (train.json), queries (query.json) and gallery (val.json) of PoseTrack21."""
    root = Path(root)
    folder = _annotation_dir(root, anno_dir)
    train, _ = read_posetrack21_json(folder / "train.json", root)
    gallery, _ = read_posetrack21_json(folder / "val.json", root)
    query_images, query_people = read_posetrack21_json(folder / "query.json", root)
    queries = []
    for i, person in query_people:
        image = query_images[i]
        if person.pid < 0:
            raise ValueError(f"{folder / 'query.json'}: the query in {image.image_path} has no person_id")
        queries.append(QueryRecord(image.image_path, person.box, person.pid, image.camera, frame=image.frame))
    return PersonSearchSplit(
        name="posetrack21",
        images=train,
        queries=queries,
        gallery=gallery,
        query_gallery=None,
        root=str(root),
    )

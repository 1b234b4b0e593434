"""Dataset-independent person-search records.

Every loader (CUHK-SYSU, PRW, PoseTrack21, SynthPS) returns these types, so training and evaluation
never see a dataset's own annotation format. Boxes are ``(x1, y1, x2, y2)`` in image pixels with
``x2 > x1`` and ``y2 > y1``; identity ids are ``>= 0`` for labelled people and ``-1`` for people
nobody labelled (they still count as persons for detection and feed OIM's unlabelled queue).

Records convert to and from plain JSON-able dicts (``to_dict`` / ``from_dict``) so an annotation
file or a cache can hold them without pickling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Box = tuple[float, float, float, float]

UNLABELLED = -1


def _as_box(value: Iterable[float], what: str) -> Box:
    """Validates a box: four finite numbers with positive width and height."""
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: box must be four numbers, got {value!r}") from exc
    if len(box) != 4:
        raise ValueError(f"{what}: box must have 4 values (x1, y1, x2, y2), got {len(box)}")
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{what}: box needs x2 > x1 and y2 > y1, got {box}")
    return box  # type: ignore[return-value]


def _check_pid(pid: int, what: str) -> int:
    pid = int(pid)
    if pid < UNLABELLED:
        raise ValueError(f"{what}: pid must be >= 0 or -1 (unlabelled), got {pid}")
    return pid


@dataclass(frozen=True)
class PersonBox:
    """One annotated person in an image."""

    box: Box  # x1, y1, x2, y2 in pixels
    pid: int  # identity id >= 0, or -1 for an unlabelled person

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", _as_box(self.box, "PersonBox.box"))
        object.__setattr__(self, "pid", _check_pid(self.pid, "PersonBox.pid"))

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "pid": self.pid}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PersonBox:
        return cls(box=tuple(d["box"]), pid=int(d["pid"]))


@dataclass(frozen=True)
class ImageRecord:
    """One image (or video frame) with all its annotated persons."""

    image_path: str
    width: int
    height: int
    camera: int
    persons: tuple[PersonBox, ...]
    frame: int | None = None  # frame number (videos / PRW)

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"ImageRecord {self.image_path}: width/height must be > 0")
        object.__setattr__(self, "persons", tuple(self.persons))

    @property
    def pids(self) -> list[int]:
        """Identity ids of the labelled persons in this image."""
        return [p.pid for p in self.persons if p.pid != UNLABELLED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_path": self.image_path,
            "width": self.width,
            "height": self.height,
            "camera": self.camera,
            "frame": self.frame,
            "persons": [p.to_dict() for p in self.persons],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: str | None = None) -> ImageRecord:
        """Builds a record; a relative ``image_path`` is joined to ``root`` when one is given."""
        path = _under_root(str(d["image_path"]), root)
        frame = d.get("frame")
        return cls(
            image_path=path,
            width=int(d["width"]),
            height=int(d["height"]),
            camera=int(d["camera"]),
            persons=tuple(PersonBox.from_dict(p) for p in d["persons"]),
            frame=None if frame is None else int(frame),
        )


@dataclass
class QueryRecord:
    """A query person: a box in an image, of an identity that the gallery should find."""

    image_path: str
    box: Box
    pid: int
    camera: int
    frame: int | None = None

    def __post_init__(self) -> None:
        self.box = _as_box(self.box, f"QueryRecord {self.image_path}")
        self.pid = _check_pid(self.pid, f"QueryRecord {self.image_path}")
        if self.pid == UNLABELLED:
            raise ValueError(f"QueryRecord {self.image_path}: a query needs a labelled pid, got -1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_path": self.image_path,
            "box": list(self.box),
            "pid": self.pid,
            "camera": self.camera,
            "frame": self.frame,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: str | None = None) -> QueryRecord:
        path = _under_root(str(d["image_path"]), root)
        frame = d.get("frame")
        return cls(
            image_path=path,
            box=tuple(d["box"]),
            pid=int(d["pid"]),
            camera=int(d["camera"]),
            frame=None if frame is None else int(frame),
        )


@dataclass
class PersonSearchSplit:
    """A person-search dataset: training images plus the test protocol (queries and gallery).

    - ``images``: training images (labelled pids are the OIM identities; -1 = unlabelled).
    - ``queries``: test query boxes.
    - ``gallery``: test images searched for every query. The protocol excludes a query's own image
      from its gallery at evaluation time (PRW rule); the multi-view variant also excludes the
      query's camera.
    - ``query_gallery``: optional per-query gallery, as indices into ``gallery`` (CUHK-SYSU's
      TestG50..4000 lists); ``None`` means every query searches the whole gallery (PRW, SynthPS).
    - ``root``: the dataset folder; image paths are absolute or relative to the working directory.
    - ``meta``: free-form facts about the split (seed, preset, counts), JSON-able.
    """

    name: str
    images: list[ImageRecord]
    queries: list[QueryRecord]
    gallery: list[ImageRecord]
    query_gallery: list[list[int]] | None = None
    root: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.query_gallery is not None and len(self.query_gallery) != len(self.queries):
            raise ValueError(
                f"PersonSearchSplit {self.name}: query_gallery has {len(self.query_gallery)} entries "
                f"for {len(self.queries)} queries"
            )

    @property
    def train_pids(self) -> list[int]:
        """Sorted labelled identity ids of the training images (sizes OIM's lookup table)."""
        return sorted({pid for rec in self.images for pid in rec.pids})

    @property
    def test_pids(self) -> list[int]:
        """Sorted labelled identity ids of the gallery images."""
        return sorted({pid for rec in self.gallery for pid in rec.pids})

    def to_dict(self, relative_to: str | None = None) -> dict[str, Any]:
        """JSON-able dict; with ``relative_to`` image paths under that folder are stored relative."""

        def rel(d: dict[str, Any]) -> dict[str, Any]:
            if relative_to is not None and os.path.isabs(d["image_path"]):
                d["image_path"] = os.path.relpath(d["image_path"], relative_to)
            return d

        return {
            "name": self.name,
            "images": [rel(r.to_dict()) for r in self.images],
            "queries": [rel(q.to_dict()) for q in self.queries],
            "gallery": [rel(r.to_dict()) for r in self.gallery],
            "query_gallery": self.query_gallery,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: str | None = None) -> PersonSearchSplit:
        """Inverse of ``to_dict``; relative image paths are joined to ``root`` when given."""
        for key in ("name", "images", "queries", "gallery"):
            if key not in d:
                raise ValueError(f"PersonSearchSplit dict is missing the field {key!r}")
        qg = d.get("query_gallery")
        return cls(
            name=str(d["name"]),
            images=[ImageRecord.from_dict(r, root) for r in d["images"]],
            queries=[QueryRecord.from_dict(q, root) for q in d["queries"]],
            gallery=[ImageRecord.from_dict(r, root) for r in d["gallery"]],
            query_gallery=None if qg is None else [list(map(int, g)) for g in qg],
            root="" if root is None else str(root),
            meta=dict(d.get("meta") or {}),
        )


def _under_root(path: str, root: str | None) -> str:
    """A relative record path joined to the dataset root (when one is given)."""
    return os.path.join(root, path) if root is not None and not os.path.isabs(path) else path

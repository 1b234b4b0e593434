"""Size presets of a SynthPS split.

``standard`` is the evaluation-sized split (a PRW-like test set: >= 200 identities, >= 4 cameras,
>= 1000 gallery frames); ``tiny`` renders in about a second for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SynthPSPreset:
    """How big a split is and how hard its frames are."""

    name: str
    image_size: tuple[int, int] = (384, 640)  # (height, width) of every frame
    n_cameras: int = 6
    train_ids: int = 300
    test_ids: int = 240
    train_frames: int = 1500
    test_frames: int = 1200
    cameras_per_id: tuple[int, int] = (2, 4)  # inclusive range of cameras an identity visits
    appearances_per_camera: tuple[int, int] = (3, 5)  # frames an identity shows up in, per camera
    unlabelled_per_frame: tuple[int, int] = (0, 2)  # one-off people with pid -1
    distractors_per_frame: tuple[int, int] = (0, 3)  # poles, boxes, person-sized blobs
    occlusion_prob: float = 0.35  # chance that a frame gets a foreground occluder on a person
    hard_negative_fraction: float = 0.3  # identities that copy another's colours (differ in one detail)
    queries_per_id: int = 2  # queries per test identity, each from a different camera
    min_person_height: float = 48.0  # pixels, smallest person (furthest from the camera)

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h < 64 or w < 64:
            raise ValueError(f"SynthPSPreset.image_size must be >= 64x64, got {self.image_size}")
        if self.n_cameras < 2:
            raise ValueError(
                f"SynthPSPreset.n_cameras must be >= 2 (queries need 2 views), got {self.n_cameras}"
            )
        for name in (
            "cameras_per_id",
            "appearances_per_camera",
            "unlabelled_per_frame",
            "distractors_per_frame",
        ):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"SynthPSPreset.{name} must be a range (lo <= hi, lo >= 0), got {(lo, hi)}")
        if self.cameras_per_id[0] < 2 or self.cameras_per_id[1] > self.n_cameras:
            raise ValueError(
                f"SynthPSPreset.cameras_per_id must lie in [2, n_cameras={self.n_cameras}], "
                f"got {self.cameras_per_id}"
            )
        for name in ("occlusion_prob", "hard_negative_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SynthPSPreset.{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.train_ids, self.test_ids, self.train_frames, self.test_frames) < 1:
            raise ValueError("SynthPSPreset: train_ids, test_ids, train_frames and test_frames must be >= 1")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PRESETS: dict[str, SynthPSPreset] = {
    "standard": SynthPSPreset(name="standard"),
    "tiny": SynthPSPreset(
        name="tiny",
        image_size=(192, 320),
        n_cameras=2,
        train_ids=6,
        test_ids=6,
        train_frames=8,
        test_frames=12,
        cameras_per_id=(2, 2),
        appearances_per_camera=(1, 2),
        unlabelled_per_frame=(0, 1),
        distractors_per_frame=(1, 2),
        occlusion_prob=0.5,
        hard_negative_fraction=0.34,
        queries_per_id=1,
        min_person_height=40.0,
    ),
}


def get_preset(preset: str | SynthPSPreset) -> SynthPSPreset:
    """Looks a preset up by name (or passes a custom one through)."""
    if isinstance(preset, SynthPSPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthPS preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]

"""Application settings: one dataclass, defaults in code, YAML files override them.

`configs/app.yaml` lists every field with its default (a test keeps the two equal), so a deployment
copies that file and edits what it needs. Relative paths in a YAML file stay relative to the working
directory, like the command-line flags of `app.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "configs" / "app.yaml"


@dataclass
class AppConfig:
    """Settings of the video person-search app (storage, decoding limits, index tuning)."""

    # storage
    data_dir: Path = field(default=Path("data"), metadata={"help": "videos' derived data, DB, indexes"})
    database_url: str = field(
        default="",
        metadata={"help": "SQLAlchemy URL; empty = sqlite:///<data_dir>/fslora.db (postgresql+psycopg://...)"},
    )
    # video decoding
    sample_fps: float = field(default=2.0, metadata={"help": "frames per second sampled for indexing"})
    max_resolution: int = field(default=4096, metadata={"help": "max width or height of a video, pixels"})
    max_duration_s: float = field(default=4 * 3600.0, metadata={"help": "longest video accepted, seconds"})
    decode_backend: str = field(
        default="auto", metadata={"help": "auto (decord, then OpenCV) | decord | opencv"})
    # indexing
    batch_frames: int = field(default=8, metadata={"help": "sampled frames per inference batch and commit"})
    score_thresh: float = field(default=0.5, metadata={"help": "min person score stored"})
    mask_thumbnail_size: int = field(default=32, metadata={"help": "side of stored expert-mask thumbnails"})
    # vector index (see app/vector_index.py for why pq_refine is the default approximate kind)
    ann_threshold: int = field(default=100_000, metadata={"help": "vectors past which search is approximate"})
    ann_kind: str = field(default="pq_refine", metadata={"help": "approximate index: pq_refine | hnsw"})
    pq_m: int = field(default=128, metadata={"help": "4-bit PQ sub-quantizers (must divide the dim)"})
    pq_train_size: int = field(default=20_000, metadata={"help": "vectors sampled to train PQ"})
    refine_k_factor: int = field(default=50, metadata={"help": "PQ candidates re-ranked exactly, x k"})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW graph degree M"})
    hnsw_ef_construction: int = field(default=80, metadata={"help": "HNSW efConstruction"})
    hnsw_ef_search: int = field(default=128, metadata={"help": "HNSW efSearch (recall vs latency)"})
    search_threads: int = field(default=1, metadata={"help": "FAISS threads per search; 0 = all cores"})

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        positive = ("sample_fps", "max_resolution", "max_duration_s", "batch_frames", "mask_thumbnail_size",
                    "ann_threshold", "pq_m", "pq_train_size", "refine_k_factor", "hnsw_m",
                    "hnsw_ef_construction", "hnsw_ef_search")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"AppConfig.{name} must be a positive number, got {value!r}")
        if isinstance(self.search_threads, bool) or not isinstance(self.search_threads, int) \
                or self.search_threads < 0:
            raise ValueError(f"AppConfig.search_threads must be an integer >= 0, got {self.search_threads!r}")
        if self.ann_kind not in ("pq_refine", "hnsw"):
            raise ValueError(f"AppConfig.ann_kind must be pq_refine|hnsw, got {self.ann_kind!r}")
        if self.decode_backend not in ("auto", "decord", "opencv"):
            raise ValueError(
                f"AppConfig.decode_backend must be auto|decord|opencv, got {self.decode_backend!r}")
        if not 0.0 <= self.score_thresh <= 1.0:
            raise ValueError(f"AppConfig.score_thresh must be in [0, 1], got {self.score_thresh!r}")
        if not isinstance(self.database_url, str):
            raise ValueError(f"AppConfig.database_url must be a string, got {self.database_url!r}")

    @property
    def db_url(self) -> str:
        """The database URL in use: the configured one, or a SQLite file inside data_dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'fslora.db'}"

    @property
    def index_dir(self) -> Path:
        """Folder of the FAISS index files (one per model)."""
        return self.data_dir / "indexes"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AppConfig:
        """Builds a config from a mapping; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"AppConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> AppConfig:
        """Loads a YAML file of overrides (missing keys keep their defaults), then applies `overrides`."""
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read app config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"app config {path} must hold a mapping of fields, got {type(loaded).__name__}")
        return cls.from_dict({**loaded, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, ready for YAML/JSON."""
        out = dataclasses.asdict(self)
        out["data_dir"] = str(self.data_dir)
        return out

"""The shared person-search record types (fslora/data/records.py)."""

import json

import pytest

from fslora.data import ImageRecord, PersonBox, PersonSearchSplit, QueryRecord


def _split() -> PersonSearchSplit:
    img = ImageRecord(
        "images/a.jpg",
        64,
        48,
        camera=1,
        persons=(PersonBox((1, 2, 10, 30), 3), PersonBox((20, 5, 30, 40), -1)),
    )
    gal = ImageRecord("images/b.jpg", 64, 48, camera=2, persons=[PersonBox((5, 5, 15, 35), 7)], frame=12)
    q = QueryRecord("images/b.jpg", (5, 5, 15, 35), pid=7, camera=2, frame=12)
    return PersonSearchSplit("toy", images=[img], queries=[q], gallery=[gal], meta={"seed": 1})


def test_boxes_are_validated_and_normalised():
    box = PersonBox([1, 2, 3, 4], 0)
    assert box.box == (1.0, 2.0, 3.0, 4.0) and isinstance(box.box, tuple)
    with pytest.raises(ValueError, match="x2 > x1"):
        PersonBox((5, 0, 5, 10), 0)
    with pytest.raises(ValueError, match="4 values"):
        PersonBox((0, 0, 1), 0)
    with pytest.raises(ValueError, match="pid"):
        PersonBox((0, 0, 1, 1), -2)
    with pytest.raises(ValueError, match="labelled pid"):
        QueryRecord("x.jpg", (0, 0, 1, 1), pid=-1, camera=0)


def test_split_round_trips_through_json_and_joins_root(tmp_path):
    split = _split()
    d = json.loads(json.dumps(split.to_dict()))
    back = PersonSearchSplit.from_dict(d)
    assert back == split
    rooted = PersonSearchSplit.from_dict(d, root=str(tmp_path))
    assert rooted.images[0].image_path == str(tmp_path / "images/a.jpg")
    assert rooted.queries[0].image_path == str(tmp_path / "images/b.jpg")
    assert rooted.to_dict(relative_to=str(tmp_path))["gallery"][0]["image_path"] == "images/b.jpg"


def test_split_helpers_and_errors():
    split = _split()
    assert split.train_pids == [3]  # unlabelled -1 is not an identity
    assert split.test_pids == [7]
    assert split.images[0].pids == [3]
    with pytest.raises(ValueError, match="query_gallery"):
        PersonSearchSplit("bad", [], [split.queries[0]], [], query_gallery=[[0], [1]])
    with pytest.raises(ValueError, match="'gallery'"):
        PersonSearchSplit.from_dict({"name": "x", "images": [], "queries": []})


def test_package_exports_loaders_lazily():
    import fslora.data
    from fslora.data import synthps

    assert fslora.data.load_synthps is synthps.load_synthps
    with pytest.raises(AttributeError):
        fslora.data.no_such_loader  # noqa: B018

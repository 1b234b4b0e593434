"""SynthPS image splits: protocol of the standard plan, determinism, box quality, files on disk."""

import json
from collections import defaultdict
from dataclasses import replace

import cv2
import numpy as np
import pytest

from fslora.data.synthps import generate_split, get_preset, load_synthps, plan_split
from fslora.data.synthps.__main__ import main as synthps_cli
from fslora.data.synthps.compose import render_frame
from fslora.data.synthps.draw import paint_layers
from fslora.data.synthps.figure import Pose, person_layers
from fslora.data.synthps.identities import ACCESSORIES, Identity, Texture, random_identity, texture_key
from fslora.data.synthps.plan import item_extent
from fslora.data.synthps.presets import SynthPSPreset


@pytest.fixture(scope="module")
def standard():
    return plan_split(0, "standard")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    split = generate_split(root, seed=3, preset="tiny", progress=False)
    return root, split


def test_standard_plan_meets_the_protocol_minimums(standard):
    s = standard.stats()
    assert s["test"]["identities"] >= 200
    assert s["test"]["cameras_used"] >= 4
    assert s["test"]["frames"] >= 1000
    assert s["test"]["occluders"] > 100 and s["test"]["distractors"] > 100
    assert s["test"]["unlabelled_persons"] > 0
    assert s["test"]["hard_negative_pairs"] >= 20
    assert s["queries"] >= 200
    train_ids, test_ids = set(standard.cameras_of("train")), set(standard.cameras_of("test"))
    assert train_ids and not train_ids & test_ids  # disjoint identities
    # every query identity is seen by >= 2 cameras, so a cross-camera match exists
    cams = standard.cameras_of("test")
    assert all(len(cams[q.pid]) >= 2 for q in standard.queries)
    assert len({(q.pid, q.camera) for q in standard.queries}) == len(standard.queries)


def test_identities_are_consistent_everywhere(standard):
    by_pid = {i.pid: i for i in standard.identities}
    seen = 0
    for fp in standard.train_frames + standard.test_frames:
        for _, p in fp.persons:
            if p.identity.pid >= 0:
                assert p.identity == by_pid[p.identity.pid]  # same look in every camera and frame
                seen += 1
    assert seen > 4000


def test_hard_negatives_share_colours_and_differ_in_one_detail(standard):
    by_pid = {i.pid: i for i in standard.identities}
    pairs = [(by_pid[i.hard_negative_of], i) for i in standard.identities if i.hard_negative_of is not None]
    assert len(pairs) > 50
    kinds = set()
    for base, neg in pairs:
        assert (neg.top, neg.bottom, neg.skin, neg.height) == (base.top, base.bottom, base.skin, base.height)
        diffs = [
            f
            for f in ("top_texture", "bottom_texture")
            if texture_key(getattr(base, f)) != texture_key(getattr(neg, f))
        ]
        diffs += [a for a in ACCESSORIES if (getattr(base, a) is None) != (getattr(neg, a) is None)]
        assert diffs == [neg.differs_in]
        kinds.add(neg.differs_in)
    assert {"top_texture", "bottom_texture"} <= kinds


def test_identities_round_trip_through_json(standard):
    for ident in standard.identities[:40]:
        assert Identity.from_dict(json.loads(json.dumps(ident.to_dict()))) == ident


def test_texture_identity_lives_in_high_frequencies():
    """Two people differing only in stripe period look alike once blurred, unlike when sharp."""
    base = random_identity(np.random.default_rng(5), 0)
    base = replace(base, top=(200, 40, 40), long_sleeves=True, hat=None, bag=None, backpack=None)
    a = replace(base, top_texture=Texture("stripes", 0.025, 0.0, (240, 240, 240)))
    b = replace(base, top_texture=Texture("stripes", 0.06, 0.0, (240, 240, 240)))
    pose, light = Pose(60, 230, 220, phase=0.3, facing=1), np.ones(3, np.float32)
    imgs = []
    for ident in (a, b):
        img = np.full((240, 120, 3), 128, np.uint8)
        paint_layers(img, person_layers(ident, pose), light)
        imgs.append(img.astype(np.float32))
    sharp = np.abs(imgs[0] - imgs[1]).mean()
    blurred = np.abs(cv2.GaussianBlur(imgs[0], (0, 0), 6) - cv2.GaussianBlur(imgs[1], (0, 0), 6)).mean()
    assert sharp > 5 and blurred < 0.25 * sharp


def test_same_seed_same_bytes_and_different_seed_differs(tiny_dir, tmp_path):
    root, _ = tiny_dir
    again = tmp_path / "again"
    generate_split(again, seed=3, preset="tiny", progress=False, workers=2)  # parallel rendering, same bytes
    files = sorted(p.relative_to(root) for p in root.rglob("*.jpg"))
    assert len(files) == 20
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert (root / "annotations.json").read_bytes() == (again / "annotations.json").read_bytes()
    other = tmp_path / "other"
    generate_split(other, seed=4, preset="tiny", progress=False)
    assert sum((root / f).read_bytes() != (other / f).read_bytes() for f in files) == len(files)


def test_boxes_lie_inside_their_images(tiny_dir):
    _, split = tiny_dir
    n = 0
    for rec in split.images + split.gallery:
        img = cv2.imread(rec.image_path)
        assert img.shape[:2] == (rec.height, rec.width)
        for p in rec.persons:
            x1, y1, x2, y2 = p.box
            assert 0 <= x1 < x2 <= rec.width and 0 <= y1 < y2 <= rec.height
            assert y2 - y1 > 1.5 * (x2 - x1) * 0.5  # people are upright-ish
            n += 1
    assert n >= 30


def test_boxes_are_tight_around_the_painted_person():
    """Render each unobstructed person with and without them: the changed pixels fill the box."""
    plan = plan_split(11, "tiny")
    checked = 0
    for fp in plan.train_frames + plan.test_frames:
        cam = plan.cameras[fp.camera]
        full, people = render_frame(cam, list(fp.items), fp.noise_offset)
        boxes = list(fp.boxes)
        assert np.allclose(boxes, [item_extent(it) for it in fp.items], atol=1e-6)
        for person in people:
            i = person.index
            x1, y1, x2, y2 = boxes[i]
            alone = all(
                b[2] < x1 - 2 or b[0] > x2 + 2 or b[3] < y1 - 2 or b[1] > y2 + 2
                for j, b in enumerate(boxes)
                if j != i
            )
            if not alone:
                continue
            without, _ = render_frame(cam, [it for j, it in enumerate(fp.items) if j != i], fp.noise_offset)
            ys, xs = np.nonzero((full != without).any(axis=2))
            changed = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            bx1, by1, bx2, by2 = person.box
            assert bx1 <= changed[0] <= bx1 + 1 and by1 <= changed[1] <= by1 + 1
            assert bx2 - 1 <= changed[2] <= bx2 and by2 - 1 <= changed[3] <= by2
            fill = len(xs) / ((bx2 - bx1) * (by2 - by1))
            assert 0.2 < fill < 0.8  # an articulated figure, not a rectangle
            assert person.visibility == pytest.approx(1.0)
            checked += 1
    assert checked >= 5


def test_queries_follow_the_prw_protocol(tiny_dir):
    _, split = tiny_dir
    assert len(split.queries) >= 4
    by_path = {r.image_path: r for r in split.gallery}
    for q in split.queries:
        own = by_path[q.image_path]
        assert any(p.pid == q.pid and p.box == q.box for p in own.persons)
        other_cams = {r.camera for r in split.gallery if q.pid in r.pids and r.image_path != q.image_path}
        assert other_cams - {q.camera}  # a match exists in another camera
    assert not set(split.train_pids) & set(split.test_pids)


def test_load_round_trip_and_files(tiny_dir, tmp_path):
    root, split = tiny_dir
    assert load_synthps(root) == split
    data = json.loads((root / "annotations.json").read_text())
    assert {i["split"] for i in data["identities"]} == {"train", "test"}
    assert len(data["cameras"]) == 2
    assert "hard-negative" in (root / "README.md").read_text()
    with pytest.raises(ValueError, match="no SynthPS annotations"):
        load_synthps(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="'format'"):
        load_synthps(tmp_path)


def test_cli_writes_a_split(tmp_path, capsys):
    assert synthps_cli(["--out", str(tmp_path), "--seed", "2", "--split", "tiny", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stats"]["test"]["frames"] == 12
    split = load_synthps(tmp_path)
    assert len(split.gallery) == 12 and len(split.images) == 8


def test_presets_validate():
    assert get_preset("tiny").n_cameras == 2
    with pytest.raises(ValueError, match="unknown SynthPS preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="n_cameras"):
        SynthPSPreset("bad", n_cameras=1)
    with pytest.raises(ValueError, match="occlusion_prob"):
        SynthPSPreset("bad", occlusion_prob=1.5)


def test_plan_is_deterministic_and_frames_have_people():
    a, b = plan_split(9, "tiny"), plan_split(9, "tiny")
    assert a.test_frames == b.test_frames and a.queries == b.queries
    assert a.test_frames != plan_split(10, "tiny").test_frames
    per_frame = defaultdict(int)
    for fp in a.train_frames + a.test_frames:
        per_frame[fp.image_path] = len(fp.persons)
    assert min(per_frame.values()) >= 1

"""The dataset-to-model bridge: identity remapping, targets, flips, images and the resumable epoch order."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fslora.data.records import ImageRecord, PersonBox
from fslora.training.data import (
    EpochOrder,
    IdentityMap,
    TrainImages,
    epoch_order,
    evenly_spaced,
    load_dataset,
    read_rgb,
    record_target,
    trainable_records,
)


def _record(
    path: str, persons: list[tuple[tuple[float, float, float, float], int]], w: int = 40, h: int = 30
):
    return ImageRecord(path, w, h, camera=0, persons=tuple(PersonBox(b, p) for b, p in persons))


RECORDS = [
    _record("a.jpg", [((1, 2, 10, 20), 17), ((12, 2, 20, 25), -1)]),
    _record("b.jpg", [((5, 5, 15, 28), 3), ((20, 1, 30, 29), 17), ((31, 3, 39, 27), 250)]),
    _record("c.jpg", [((2, 2, 9, 9), -1)]),
]


def test_identity_map_is_contiguous_in_pid_order_and_keeps_unlabelled():
    ids = IdentityMap.from_records(RECORDS)
    assert ids.num_ids == 3
    assert [ids(3), ids(17), ids(250)] == [0, 1, 2]
    assert ids(-1) == -1
    with pytest.raises(ValueError, match="pid 99"):
        ids(99)


def test_record_target_has_boxes_and_remapped_pids():
    ids = IdentityMap.from_records(RECORDS)
    target = record_target(RECORDS[1], ids)
    assert target["boxes"].dtype == np.float32 and target["boxes"].shape == (3, 4)
    np.testing.assert_array_equal(target["boxes"][0], [5, 5, 15, 28])
    assert target["pids"].dtype == np.int64
    assert target["pids"].tolist() == [0, 1, 2]
    assert record_target(RECORDS[0], ids)["pids"].tolist() == [1, -1]
    # every pid ends up in [0, num_ids) or -1: what OIM accepts
    all_pids = np.concatenate([record_target(r, ids)["pids"] for r in RECORDS])
    assert set(all_pids.tolist()) <= {-1, *range(ids.num_ids)}


def test_flipped_target_mirrors_boxes_in_the_image_width():
    ids = IdentityMap.from_records(RECORDS)
    flipped = record_target(RECORDS[0], ids, flip=True)
    np.testing.assert_allclose(flipped["boxes"], [[30, 2, 39, 20], [20, 2, 28, 25]])
    assert (flipped["boxes"][:, 2] > flipped["boxes"][:, 0]).all()
    assert flipped["pids"].tolist() == [1, -1]


def test_train_images_flips_pixels_with_boxes(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "img.png"  # lossless, so pixels compare exactly
    Image.fromarray(pixels).save(path)
    record = _record(str(path), [((1, 2, 10, 20), 5)])
    data = TrainImages([record], IdentityMap.from_records([record]))
    plain, flipped = data[0], data[(0, True)]
    np.testing.assert_array_equal(plain.image, pixels)
    np.testing.assert_array_equal(flipped.image, pixels[:, ::-1])
    assert plain.image.flags.writeable and flipped.image.flags.c_contiguous
    # the person's pixels move with its box
    x1, y1, x2, y2 = flipped.target["boxes"][0].astype(int)
    np.testing.assert_array_equal(flipped.image[y1:y2, x1:x2], pixels[2:20, 1:10][:, ::-1])
    assert plain.target["pids"].tolist() == [0]


def test_read_rgb_checks_the_recorded_size(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(path)
    assert read_rgb(path, (40, 30)).shape == (30, 40, 3)
    with pytest.raises(ValueError, match="img.png: image is 40x30 but its record says 41x30"):
        read_rgb(path, (41, 30))
    with pytest.raises(ValueError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a, fa = epoch_order(10, seed=3, epoch=1, hflip=0.5)
    b, fb = epoch_order(10, seed=3, epoch=1, hflip=0.5)
    c, _ = epoch_order(10, seed=3, epoch=2, hflip=0.5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    assert sorted(a.tolist()) == list(range(10))
    assert a.tolist() != c.tolist()
    assert not epoch_order(10, 3, 1, hflip=0.0)[1].any()
    assert epoch_order(10, 3, 1, hflip=1.0)[1].all()


def test_epoch_sampler_covers_every_image_and_resumes_mid_epoch():
    sampler = EpochOrder(num_samples=7, batch_size=3, seed=0, hflip=0.5)
    assert sampler.batches_per_epoch == 3
    sampler.set_epoch(4)
    full = list(sampler)
    assert [len(b) for b in full] == [3, 3, 1]
    assert sorted(i for batch in full for i, _ in batch) == list(range(7))
    sampler.set_epoch(4, skip_batches=2)
    assert len(sampler) == 1
    assert list(sampler) == full[2:]
    with pytest.raises(ValueError, match="skip_batches"):
        sampler.set_epoch(0, skip_batches=4)


def test_images_without_people_are_left_out_of_training():
    empty = _record("d.jpg", [])
    assert trainable_records([*RECORDS, empty]) == RECORDS
    with pytest.raises(ValueError, match="no image with a person"):
        trainable_records([empty])


def test_load_dataset_names_a_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="prw root .*nowhere"):
        load_dataset("prw", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset 'market'"):
        load_dataset("market", tmp_path)


def test_evenly_spaced_subset_spans_the_list_and_keeps_order():
    records = [_record(f"{i}.jpg", [((1, 1, 9, 9), i)]) for i in range(10)]
    picked = evenly_spaced(records, 4)
    assert [r.image_path for r in picked] == ["0.jpg", "3.jpg", "6.jpg", "9.jpg"]
    assert evenly_spaced(records, None) == records
    assert evenly_spaced(records, 50) == records

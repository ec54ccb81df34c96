"""Benchmark readers, each on small fixture files written here in the benchmark's own layout."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.evaluate.readers import (
    IGNORE_INDEX,
    VOC_CLASSES,
    dominant_label,
    garg_crop,
    kitti_gt_path,
    read_ade20k,
    read_cifar100,
    read_image_folder,
    read_kitti_eigen,
    read_nyu,
    read_voc,
    restricted_unpickle,
    world_seg,
)


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=100) if path.suffix == ".jpg" else Image.fromarray(image).save(path)
    return image


def _png16(path: Path, units: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(units.astype(np.uint16)).save(path)


# --- NYU Depth v2 ---------------------------------------------------------------------------------


def test_nyu_bts_filelist(tmp_path: Path) -> None:
    mm = np.array([[0, 1000, 2500], [9999, 500, 65535]], dtype=np.uint16)
    _rgb(tmp_path / "nyu/bathroom/rgb_00045.jpg", 2, 3)
    _png16(tmp_path / "nyu/bathroom/sync_depth_00045.png", mm)
    _rgb(tmp_path / "nyu/kitchen/rgb_00100.jpg", 2, 3, seed=1)
    _png16(tmp_path / "nyu/kitchen/sync_depth_00100.png", mm // 2)
    filelist = tmp_path / "nyu_depth_v2_test_files_with_gt.txt"
    filelist.write_text(
        "bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n"
        "/kitchen/rgb_00100.jpg /kitchen/sync_depth_00100.png 518.8579\n"
    )
    test = read_nyu(tmp_path / "nyu", "test", filelist)
    assert test.ids == ("bathroom/rgb_00045.jpg", "kitchen/rgb_00100.jpg") and test.depth_range == (1e-3, 10.0)
    sample = test[0]
    assert sample.image.shape == (2, 3, 3) and sample.image.dtype == np.uint8
    np.testing.assert_allclose(sample.depth, mm / 1000.0, rtol=1e-6)
    assert sample.depth.dtype == np.float32 and sample.depth[0, 0] == 0.0  # missing stays missing
    assert test.image("kitchen/rgb_00100.jpg").shape == (2, 3, 3)


def test_nyu_split_folders_pair_by_name(tmp_path: Path) -> None:
    _rgb(tmp_path / "nyu_depth_v2/test/rgb_00001.jpg", 4, 5)
    _png16(tmp_path / "nyu_depth_v2/test/sync_depth_00001.png", np.full((4, 5), 1234))
    _rgb(tmp_path / "nyu_depth_v2/test/scene/0002.jpg", 4, 5)
    _png16(tmp_path / "nyu_depth_v2/test/scene/0002.png", np.full((4, 5), 4321))
    _rgb(tmp_path / "nyu_depth_v2/train/0003.jpg", 4, 5)
    test = read_nyu(tmp_path / "nyu_depth_v2", "test")
    assert sorted(test.ids) == ["rgb_00001.jpg", "scene/0002.jpg"]
    by_id = {s.id: s for s in test}
    assert by_id["rgb_00001.jpg"].depth[0, 0] == pytest.approx(1.234)
    assert by_id["scene/0002.jpg"].depth[0, 0] == pytest.approx(4.321)


# --- KITTI Eigen --------------------------------------------------------------------------------------


def test_kitti_eigen_filelist_sparse_depth_and_garg_crop(tmp_path: Path) -> None:
    raw, gt = tmp_path / "kitti_raw", tmp_path / "data_depth_annotated"
    h, w = 40, 120
    frames = ["0000000069", "0000000070", "0000000071"]
    depth_units = np.zeros((h, w), np.uint16)
    depth_units[30, 60] = 256 * 12  # 12 m inside the Garg crop
    depth_units[2, 1] = 256 * 5  # 5 m outside it (top-left)
    for f in frames:
        _rgb(raw / f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{f}.png", h, w)
    _png16(gt / f"train/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/{frames[0]}.png", depth_units)
    _png16(gt / f"val/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/{frames[1]}.png", depth_units)
    filelist = tmp_path / "eigen_test_files.txt"
    filelist.write_text(
        f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{frames[0]}.png "
        f"train/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/{frames[0]}.png 721.5377\n"
        f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{frames[1]}.png None 721.5377\n"
        f"2011_09_26/2011_09_26_drive_0002_sync/image_02/data/{frames[2]}.png\n"  # no ground truth: skipped
    )
    test = read_kitti_eigen(raw, gt, filelist)
    assert len(test) == 2 and test.depth_range == (1e-3, 80.0)
    cropped = test[0].depth
    assert cropped[30, 60] == pytest.approx(12.0) and cropped[2, 1] == 0.0
    assert np.count_nonzero(cropped) == 1  # sparse: everything else has no LiDAR point
    full = read_kitti_eigen(raw, gt, filelist, crop=None)[1].depth
    assert full[2, 1] == pytest.approx(5.0)
    assert garg_crop(375, 1242) == (153, 44, 371, 1197)
    assert kitti_gt_path("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png") == (
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    )
    with pytest.raises(ValueError, match="crop"):
        read_kitti_eigen(raw, gt, filelist, crop="eigen")


# --- ADE20K and VOC ----------------------------------------------------------------------------------


def test_ade20k_layout_and_zero_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    labels = np.array([[0, 1, 150], [7, 7, 0]], dtype=np.uint8)
    for stem in ("ADE_val_00000001", "ADE_val_00000002"):
        _rgb(root / f"images/validation/{stem}.jpg", 2, 3)
        (root / "annotations/validation").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels, mode="L").save(root / f"annotations/validation/{stem}.png")
    _rgb(root / "images/training/ADE_train_00000001.jpg", 2, 3)
    (root / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n" + "".join(f"{i}\t0.1\t1\t1\tname{i};alias\n" for i in range(1, 151))
    )
    val = read_ade20k(tmp_path, "val")
    assert val.ids == ("ADE_val_00000001", "ADE_val_00000002") and val.num_classes == 150
    np.testing.assert_array_equal(val[0].seg, [[IGNORE_INDEX, 0, 149], [6, 6, IGNORE_INDEX]])
    assert val.class_names[0] == "name1" and len(val.class_names) == 150
    assert read_ade20k(root, "training").ids == ("ADE_train_00000001",)


def _voc_palette() -> list[int]:
    """The Pascal VOC colour map (bit-interleaved class index), 256 RGB triples flattened."""
    palette = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def test_voc_palette_png_reads_indices_and_255_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit/VOC2012"
    labels = np.array([[0, 15, 255], [1, 20, 255]], dtype=np.uint8)
    for image_id in ("2007_000032", "2007_000033"):
        _rgb(root / f"JPEGImages/{image_id}.jpg", 2, 3)
        label = Image.fromarray(labels, mode="P")
        label.putpalette(_voc_palette())
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        label.save(root / f"SegmentationClass/{image_id}.png")
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000032\n2007_000033\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000033\n")
    val = read_voc(tmp_path / "VOCdevkit", "val")
    assert val.ids == ("2007_000032", "2007_000033") and val.num_classes == 21 == len(VOC_CLASSES)
    np.testing.assert_array_equal(val[0].seg, [[0, 15, IGNORE_INDEX], [1, 20, IGNORE_INDEX]])
    assert read_voc(root, "train").ids == ("2007_000033",)
    # a label PNG saved as colours (not indices) must be refused, not silently misread
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "SegmentationClass/2007_000033.png")
    with pytest.raises(ValueError, match="palette"):
        val.load("2007_000033")


# --- CIFAR-100 and the restricted unpickler -------------------------------------------------------------


def _write_cifar(folder: Path, images: np.ndarray, labels: list[int]) -> None:
    """The cifar-100-python layout: pickled dicts with bytes keys, data rows R(1024) G(1024) B(1024)."""
    folder.mkdir(parents=True)
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    for split in ("train", "test"):
        batch = {
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": labels,
            b"coarse_labels": [y // 5 for y in labels],
            b"data": data,
        }
        (folder / split).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar100_pickles_read_with_restricted_unpickler(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    _write_cifar(tmp_path / "cifar-100-python", images, [3, 99, 0, 42])
    test = read_cifar100(tmp_path, "test")
    assert len(test) == 4 and test.num_classes == 100 and test.class_names[99] == "class99"
    np.testing.assert_array_equal(test[1].image, images[1])  # channel planes put back in place
    assert [s.label for s in test] == [3, 99, 0, 42]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_object_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_unpickle(pickle.dumps({b"data": _Exploit(marker)}, protocol=2))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="numeric"):
        restricted_unpickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    plain = {b"k": [1, 2, b"x", "y", 3.5, (1, 2)], b"a": np.arange(6, dtype=np.int64).reshape(2, 3)}
    back = restricted_unpickle(pickle.dumps(plain, protocol=4))
    assert back[b"k"] == plain[b"k"]
    np.testing.assert_array_equal(back[b"a"], plain[b"a"])


# --- class folders and the world -------------------------------------------------------------------------


def test_image_folder_classes_in_sorted_order(tmp_path: Path) -> None:
    _rgb(tmp_path / "val/n02/b.JPEG", 4, 4)
    _rgb(tmp_path / "val/n01/a.png", 4, 4)
    _rgb(tmp_path / "val/n01/c.jpg", 4, 4)
    (tmp_path / "val/n01/notes.txt").write_text("not an image")
    val = read_image_folder(tmp_path, "val")
    assert val.class_names == ("n01", "n02")
    assert [(s.id, s.label) for s in val] == [("n01/a.png", 0), ("n01/c.jpg", 0), ("n02/b.JPEG", 1)]


def test_world_seg_and_dominant_label() -> None:
    instances = np.array([[0, 1, 1], [0, 2, 0]])
    depth = np.array([[0.0, 3.0, 3.0], [2.0, 4.0, 5.0]])
    objects = [
        {"instance_id": 1, "label": "cone", "pixel_count": 2},
        {"instance_id": 2, "label": "cube", "pixel_count": 1},
    ]
    classes = ("cube", "sphere", "cone")
    np.testing.assert_array_equal(world_seg(instances, depth, objects, classes), [[IGNORE_INDEX, 3, 3], [0, 1, 0]])
    assert dominant_label(objects, classes) == 2
    assert dominant_label([{"instance_id": 1, "label": "cone", "pixel_count": 0}], classes) is None

"""What the trainer accepts is what Ultralytics trains on: checked against Ultralytics' own label scan.

Each sample is given to Ultralytics twice: raw, as it came from the bucket, to learn Ultralytics' own verdict;
and as the trainer's dataset step wrote it, to prove that everything written is trained on, unchanged.
No training: YOLODataset builds the label cache exactly as a training run does, and loads every image.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.data import make_sample
from trainer import CLASS_NAMES
from trainer.dataset import write_dataset
from trainer.reconcile import read_label_caches, reconcile
from trainer.selection import Record

GOOD = "0 0.5 0.5 0.2 0.2\n"


_colours = iter(range(1, 250))


def image(fmt: str = "JPEG", size=(48, 48)) -> bytes:
    """A distinct image each call (the same photo twice would be one image, see test_dataset.py)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (next(_colours), 160, 40)).save(buf, format=fmt)
    return buf.getvalue()


def mpo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(
        buf, format="MPO", save_all=True, append_images=[Image.new("RGB", (40, 40), (9, 9, 9))]
    )
    return buf.getvalue()


def png_with_bad_crc() -> bytes:
    data = bytearray(image("PNG", (40, 40)))
    idat = data.index(b"IDAT")
    data[idat + 4 + int.from_bytes(data[idat - 4 : idat], "big")] ^= 0xFF
    return bytes(data)


JPEG = make_sample(11, size=64).image
# name -> (image bytes, label bytes, the trainer's verdict: "ok", or the reason it is skipped under)
SAMPLES: dict[str, tuple[bytes, bytes, str]] = {
    "good": (make_sample(1, size=64).image, make_sample(1).label.encode(), "ok"),
    "good-png": (image("PNG"), GOOD.encode(), "ok"),
    "webp": (image("WEBP"), GOOD.encode(), "ok"),
    "bmp": (image("BMP"), GOOD.encode(), "ok"),
    "tiff": (image("TIFF"), GOOD.encode(), "ok"),
    "mpo-camera-jpeg": (mpo(), GOOD.encode(), "ok"),
    "8x8": (image("JPEG", (8, 8)), GOOD.encode(), "image_too_small"),
    "9x64": (image("PNG", (9, 64)), GOOD.encode(), "image_too_small"),
    "10x10": (image("PNG", (10, 10)), GOOD.encode(), "ok"),
    "bom": (image(), ("\ufeff" + GOOD).encode(), "ok"),
    "duplicate-rows": (image(), (GOOD * 3 + "1 0.3 0.3 0.1 0.1\n").encode(), "ok"),
    "class-5.0": (image(), b"5.0 0.5 0.5 0.2 0.2\n", "ok"),
    "x-1.005": (image(), b"0 1.005 0.5 0.2 0.2\n", "ok"),
    "x-1.02": (image(), b"0 1.02 0.5 0.2 0.2\n", "bad_label"),
    "class-6": (image(), b"6 0.5 0.5 0.2 0.2\n", "bad_label"),
    "class-1.5": (image(), b"1.5 0.5 0.5 0.2 0.2\n", "bad_label"),
    "nan": (image(), b"0 nan 0.5 0.2 0.2\n", "bad_label"),
    "six-fields": (image(), b"0 0.5 0.5 0.2 0.2 0.1\n", "bad_label"),
    "zero-width": (image(), b"0 0.5 0.5 0 0.2\n", "bad_label"),  # ours: Ultralytics would keep it
    "polygon": (image(), b"3 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5\n", "ok"),
    "polygon-and-box": (image(), b"3 0.1 0.1 0.4 0.1 0.4 0.5\n" + GOOD.encode(), "bad_label"),
    "not-utf8": (image(), b"0 0.5 0.5 0.2 0.2\n\xff\xfe", "bad_label"),
    "jpeg-trailing-bytes": (JPEG + b"\x00" * 64, GOOD.encode(), "ok"),
    "jpeg-truncated": (JPEG[: len(JPEG) // 2], GOOD.encode(), "bad_image"),
    "zip-as-image": (b"PK\x03\x04" + bytes(500), GOOD.encode(), "bad_image"),
    "gif": (image("GIF"), GOOD.encode(), "bad_image"),
    "png-bad-crc": (png_with_bad_crc(), GOOD.encode(), "bad_image"),
    "background": (image("JPEG", (64, 48)), b"", "ok"),
}
# Samples Ultralytics would train on that the trainer refuses, on purpose (trainer/labels.py says why).
STRICTER = {"zero-width"}


@pytest.fixture(scope="module")
def ultralytics_scan(tmp_path_factory):
    from trainer import yolo

    yolo.prepare_offline(tmp_path_factory.mktemp("ultralytics"))
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.utils import colorstr

    def scan(images_dir: Path) -> YOLODataset:
        ds = YOLODataset(
            img_path=str(images_dir),
            data={"names": dict(enumerate(CLASS_NAMES)), "channels": 3},
            task="detect",
            imgsz=64,
            augment=False,
            batch_size=4,
            prefix=colorstr("scan: "),  # coloured, as in a training run's messages
        )
        for i in range(len(ds)):
            ds[i]  # the training loader's own image read (OpenCV): it must not fail on anything written
        return ds

    return scan


def raw_verdicts(scan, root: Path) -> dict[str, int | None]:
    """Ultralytics' verdict on each sample as uploaded: its box count, or None when it drops it."""
    for name, (data, label, _) in SAMPLES.items():
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "images" / "train" / f"{name}.jpg").write_bytes(data)
        (root / "labels" / "train" / f"{name}.txt").write_bytes(label)
    ds = scan(root / "images" / "train")
    kept = {Path(lb["im_file"]).stem: len(lb["cls"]) for lb in ds.labels}
    return {name: kept.get(name) for name in SAMPLES}


def test_ultralytics_rejects_every_sample_the_trainer_skips_except_the_documented_stricter_ones(
    ultralytics_scan, tmp_path
):
    theirs = raw_verdicts(ultralytics_scan, tmp_path / "raw")
    refused_by_them = {n for n, boxes in theirs.items() if boxes is None}
    refused_by_us = {n for n, (_, _, verdict) in SAMPLES.items() if verdict != "ok"}
    assert refused_by_them == refused_by_us - STRICTER
    # What Ultralytics alters when it reads them: the duplicate rows are gone.
    assert theirs["duplicate-rows"] == 2 and theirs["bom"] == 1 and theirs["background"] == 0


def test_everything_the_trainer_writes_is_what_ultralytics_trains_on_and_the_counts_add_up(
    ultralytics_scan, tmp_path
):
    cache = tmp_path / "cache"
    cache.mkdir()
    records, files = [], {}
    for n, (name, (data, label, _)) in enumerate(SAMPLES.items()):
        (cache / f"i{n}").write_bytes(data)
        (cache / f"l{n}").write_bytes(label)
        files[f"images/{name}"], files[f"labels/{name}"] = cache / f"i{n}", cache / f"l{n}"
        records.append(Record(id=name, image_object=f"images/{name}", label_object=f"labels/{name}"))

    result = write_dataset(tmp_path / "ds", records, files, 0.7, allow_background=True, background_share=0.1)

    expected_skips: dict[str, int] = {}
    for _, _, verdict in SAMPLES.values():
        if verdict != "ok":
            expected_skips[verdict] = expected_skips.get(verdict, 0) + 1
    assert result.skipped == expected_skips
    assert sum(result.counts.values()) + sum(result.skipped.values()) == len(SAMPLES)
    assert set(result.splits) == {n for n, (_, _, v) in SAMPLES.items() if v == "ok"}
    assert result.altered == {"duplicate_boxes_removed": 2, "segments_as_boxes": 1, "jpeg_restored": 1}

    scanned = {split: ultralytics_scan(tmp_path / "ds" / "images" / split) for split in ("train", "val")}
    for split, ds in scanned.items():
        assert len(ds.labels) == result.counts[split]
    rec = reconcile(result.written, read_label_caches(tmp_path / "ds"))
    assert (rec.checked, rec.dropped, rec.boxes_changed, rec.unavailable) == (len(result.written), [], {}, [])
    messages = [m for ds in scanned.values() for m in read_label_caches(tmp_path / "ds")["train"].messages]
    assert not [m for m in messages if re.search("corrupt image/label|duplicate labels removed", m)]
    restored = sum(
        "corrupt JPEG restored" in m for split in ("train", "val") for m in _messages(tmp_path, split)
    )
    assert restored == result.altered["jpeg_restored"]


def _messages(root: Path, split: str) -> tuple[str, ...]:
    cache = read_label_caches(root / "ds")[split]
    return cache.messages if cache else ()


def test_reconcile_reports_an_image_ultralytics_dropped_that_passed_our_checks(ultralytics_scan, tmp_path):
    """The safety net for a rule a future Ultralytics adds: its verdict wins and is counted."""
    records, files = [], {}
    for n in range(4):
        s = make_sample(n, size=64)
        (tmp_path / f"i{n}").write_bytes(s.image)
        (tmp_path / f"l{n}").write_text(s.label)
        files[f"i{n}"], files[f"l{n}"] = tmp_path / f"i{n}", tmp_path / f"l{n}"
        records.append(Record(id=f"r{n}", image_object=f"i{n}", label_object=f"l{n}", split_hint="train"))
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    victim = next(k for k in result.written if k.startswith("train/"))
    (tmp_path / "ds" / "images" / victim).write_bytes(image("PNG", (6, 6)))  # replaced behind our back
    ultralytics_scan(tmp_path / "ds" / "images" / "train")

    rec = reconcile(result.written, read_label_caches(tmp_path / "ds"))
    assert [(rid, split) for rid, split, _ in rec.dropped] == [(result.written[victim][0], "train")]
    why = rec.dropped[0][2]
    assert "images/train/" in why and "<10 pixels" in why, why
    assert "\x1b" not in why and str(tmp_path) not in why  # no colour codes, no absolute path
    assert rec.unavailable == ["val"]

"""write_dataset: only valid samples, counted skips, and never a file outside the dataset folder."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.fixtures.data import make_sample
from trainer import CLASS_NAMES
from trainer.dataset import safe_stem, write_dataset
from trainer.selection import Record


def make_files(
    cache: Path, ids: list[str], seed: int = 0, hints: dict[str, str] | None = None
) -> tuple[list[Record], dict[str, Path]]:
    """One cached image and label per id, under names that never come from the id."""
    cache.mkdir(parents=True, exist_ok=True)
    records, files = [], {}
    for n, rid in enumerate(ids):
        s = make_sample(seed * 1000 + n, size=48)
        img, lbl = cache / f"img{n}", cache / f"lbl{n}"
        img.write_bytes(s.image)
        lbl.write_text(s.label)
        records.append(
            Record(
                id=rid,
                image_object=f"images/{n}.jpg",
                label_object=f"labels/{n}.txt",
                split_hint=(hints or {}).get(rid),
            )
        )
        files[f"images/{n}.jpg"] = img
        files[f"labels/{n}.txt"] = lbl
    return records, files


def all_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def test_writes_images_labels_for_train_and_val_and_a_data_yaml(tmp_path):
    ids = [f"r{i}" for i in range(6)]
    records, files = make_files(
        tmp_path / "cache", ids, hints={i: ("val" if i < "r2" else "train") for i in ids}
    )
    result = write_dataset(tmp_path / "ds", records, files, 0.8)

    root = tmp_path / "ds"
    assert result.counts == {"train": 4, "val": 2}
    assert result.skipped == {}
    for split, n in (("train", 4), ("val", 2)):
        images = sorted((root / "images" / split).iterdir())
        labels = sorted((root / "labels" / split).iterdir())
        assert len(images) == len(labels) == n
        assert all(p.suffix == ".jpg" for p in images)
        assert [p.stem for p in images] == [p.stem for p in labels]
    data = yaml.safe_load(result.data_yaml.read_text())
    assert data["nc"] == 6
    assert list(data["names"].values()) == [
        "Biodegradable",
        "Carton",
        "Glass",
        "Metal",
        "Paper",
        "Plastic",
    ]
    assert list(data["names"]) == [0, 1, 2, 3, 4, 5]
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert Path(data["path"]) == root.absolute()


def test_written_labels_and_class_counts_match_the_source_labels(tmp_path):
    records, files = make_files(tmp_path / "cache", ["a", "b"], hints={"a": "train", "b": "val"})
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    for r in records:
        expected = [line.split()[0] for line in files[r.label_object].read_text().splitlines()]
        written = (tmp_path / "ds" / "labels" / result.splits[r.id] / f"{safe_stem(r.id)}.txt").read_text()
        assert [line.split()[0] for line in written.splitlines()] == expected
        assert result.classes[r.id] == sorted({int(c) for c in expected})
    total = sum(sum(c.values()) for c in result.instances.values())
    assert total == sum(len(files[r.label_object].read_text().splitlines()) for r in records)
    assert set().union(*result.instances.values()) <= set(CLASS_NAMES)


def test_missing_and_invalid_samples_are_skipped_and_counted_by_reason(tmp_path):
    records, files = make_files(
        tmp_path / "cache", ["ok", "noimg", "nolbl", "badlbl", "badimg", "nolabelobj"]
    )
    del files["images/1.jpg"]
    del files["labels/2.txt"]
    files["labels/3.txt"].write_text("9 0.5 0.5 0.1 0.1\n")
    files["images/4.jpg"].write_bytes(b"not an image at all")
    records[5] = Record(id="nolabelobj", image_object="images/5.jpg", label_object=None)
    records = [replace(r, split_hint="train") for r in records]

    result = write_dataset(tmp_path / "ds", records, files, 0.8, missing={"images/1.jpg": "object not found"})

    assert result.skipped == {"missing_image": 1, "missing_label": 2, "bad_label": 1, "bad_image": 1}
    assert result.counts == {"train": 1, "val": 0}
    assert list(result.splits) == ["ok"]
    assert any("noimg: missing_image: object not found" in e for e in result.skipped_examples)
    assert len(all_files(tmp_path / "ds" / "images")) == 1


HOSTILE_IDS = [
    "../../../../etc/passwd",
    "../escape",
    "/absolute/path/x",
    "a/b/c",
    "a_b_c",
    "a\\b",
    "..",
    ".",
    "",
    "name\x00nul",
    "\udcff\udcfe-undecodable",
    "\udcff",
    "x" * 5000,
    "x" * 4999 + "y",
    "ünïcødé/🗑️",
    " spaces and\nnewlines ",
]


def test_hostile_record_ids_produce_files_only_inside_root_with_distinct_names(tmp_path):
    records, files = make_files(tmp_path / "cache", HOSTILE_IDS)
    root = tmp_path / "work" / "ds"

    result = write_dataset(root, records, files, 0.7)

    assert result.skipped == {}
    assert sum(result.counts.values()) == len(HOSTILE_IDS)
    written = all_files(root)
    real_root = root.resolve()
    for path in written:
        assert path.resolve().is_relative_to(real_root), path
    # Nothing appeared next to the dataset folder (e.g. via '../').
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["ds"]
    images = [p for p in written if "images" in p.relative_to(root).parts]
    labels = [p for p in written if "labels" in p.relative_to(root).parts]
    assert len(images) == len(labels) == len(HOSTILE_IDS)
    assert len({p.stem for p in images}) == len(HOSTILE_IDS)
    assert all(len(p.name.encode()) < 255 for p in written)


@pytest.mark.parametrize("rid", HOSTILE_IDS)
def test_safe_stem_is_a_single_plain_file_name(rid):
    stem = safe_stem(rid)
    assert "/" not in stem and "\\" not in stem and "\x00" not in stem
    assert stem not in (".", "..")
    stem.encode("ascii")  # no surrogates or other non-ASCII characters reach the file system


def test_an_image_validated_once_gets_a_cached_verdict_file(tmp_path):
    records, files = make_files(tmp_path / "cache", ["good", "bad"], hints={"good": "train", "bad": "train"})
    files["images/1.jpg"].write_bytes(b"\x00" * 100)
    write_dataset(tmp_path / "ds", records, files, 0.8)

    good, bad = files["images/0.jpg"], files["images/1.jpg"]
    ok_verdict = json.loads(good.with_name(good.name + ".ok").read_text())
    assert ok_verdict["suffix"] == ".jpg" and len(ok_verdict["sha256"]) == 64
    assert json.loads(bad.with_name(bad.name + ".bad").read_text())["reason"] == "bad_image"

    # The second build trusts the verdicts: the good image is not decoded again.
    good.write_bytes(b"garbage that would fail a new check")
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    assert result.counts["train"] == 1
    assert result.skipped == {"bad_image": 1}


def test_rebuilding_replaces_an_earlier_dataset_folder(tmp_path):
    records, files = make_files(tmp_path / "cache", ["a", "b", "c"])
    root = tmp_path / "ds"
    write_dataset(root, records, files, 0.8)
    write_dataset(root, [replace(records[0], split_hint="val")], files, 0.8)
    assert len(all_files(root / "images")) == 1
    assert len(all_files(root / "labels" / "val")) == 1


def same_photo_under(tmp_path: Path, ids: list[str], hints: dict[str, str] | None = None):
    """Several records whose image objects hold the very same bytes (each its own cached file)."""
    records, files = make_files(tmp_path / "cache", ids, hints=hints)
    photo = make_sample(777, size=48).image
    for r in records:
        files[r.image_object].write_bytes(photo)
    return records, files


def test_the_same_photo_under_two_ids_is_written_once_and_counted_as_a_duplicate(tmp_path):
    records, files = make_files(tmp_path / "cache", [f"r{i}" for i in range(8)])
    files["images/5.jpg"].write_bytes(files["images/2.jpg"].read_bytes())  # r5 is r2's photo again
    result = write_dataset(tmp_path / "ds", records, files, 0.5)
    assert result.skipped == {"duplicate_image": 1}
    assert "r2" in result.splits and "r5" not in result.splits
    assert sum(result.counts.values()) == 7
    assert any(e.startswith("r5: duplicate_image: the same image as r2") for e in result.skipped_examples)


def test_a_photos_split_follows_its_content_not_its_id_so_it_never_leaks_into_val(tmp_path):
    """Whatever ids the same photo arrives under, in this run or a later one, it lands in one split."""
    photo_split = set()
    for n in range(12):
        records, files = same_photo_under(tmp_path / f"run{n}", [f"id-{n}-{k}" for k in range(3)])
        result = write_dataset(tmp_path / f"ds{n}", records, files, 0.5)
        assert sum(result.counts.values()) == 1 and result.skipped == {"duplicate_image": 2}
        photo_split |= set(result.splits.values())
    assert len(photo_split) == 1


def test_a_held_out_copy_of_a_photo_wins_over_a_training_copy(tmp_path):
    records, files = same_photo_under(
        tmp_path, ["new", "replayed", "history"], {"replayed": "train", "history": "val"}
    )
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    assert result.splits == {"history": "val"}
    assert result.skipped == {"duplicate_image": 2}


def test_backgrounds_are_skipped_as_empty_labels_unless_allowed(tmp_path):
    records, files = make_files(tmp_path / "cache", [f"r{i}" for i in range(20)])
    for n in (3, 7):
        files[f"labels/{n}.txt"].write_bytes(b"")
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    assert result.skipped == {"empty_label": 2} and sum(result.counts.values()) == 18

    result = write_dataset(tmp_path / "ds", records, files, 0.8, allow_background=True, background_share=0.1)
    assert result.skipped == {} and sum(result.counts.values()) == 20
    assert sum(result.backgrounds.values()) == 2
    for rid in ("r3", "r7"):
        label = tmp_path / "ds" / "labels" / result.splits[rid] / f"{safe_stem(rid)}.txt"
        assert label.read_bytes() == b"" and result.classes[rid] == []


def test_backgrounds_beyond_their_share_are_skipped_and_counted(tmp_path):
    records, files = make_files(tmp_path / "cache", [f"r{i}" for i in range(20)])
    for n in range(10):
        files[f"labels/{n}.txt"].write_bytes(b"\n")
    result = write_dataset(tmp_path / "ds", records, files, 0.8, allow_background=True, background_share=0.1)
    # 10 images with boxes: at most 1 background keeps backgrounds within 10 % of the 11 images.
    assert sum(result.backgrounds.values()) == 1
    assert result.skipped == {"background_over_cap": 9}
    assert sum(result.counts.values()) == 11


def test_what_ultralytics_would_change_is_counted_and_written_as_it_will_read_it(tmp_path):
    records, files = make_files(tmp_path / "cache", ["dup", "bom", "poly", "tail"])
    files["labels/0.txt"].write_text("1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    files["labels/1.txt"].write_bytes("\ufeff5 0.5 0.5 0.2 0.2\n".encode())
    files["labels/2.txt"].write_text("2 0.1 0.1 0.3 0.1 0.3 0.3\n")
    files["images/3.jpg"].write_bytes(files["images/3.jpg"].read_bytes() + b"trailing bytes")
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    assert result.skipped == {}
    assert result.altered == {"duplicate_boxes_removed": 1, "segments_as_boxes": 1, "jpeg_restored": 1}
    written = {
        rid: (tmp_path / "ds" / "labels" / split / f"{safe_stem(rid)}.txt").read_text()
        for rid, split in result.splits.items()
    }
    assert written["dup"] == "1 0.500000 0.500000 0.200000 0.200000\n"
    assert written["bom"] == "5 0.500000 0.500000 0.200000 0.200000\n"
    assert written["poly"] == "2 0.200000 0.200000 0.200000 0.200000\n"
    boxes = {rid: n for rid, n in result.written.values()}
    assert boxes == {"dup": 1, "bom": 1, "poly": 1, "tail": len(written["tail"].splitlines())}


def test_a_verdict_cached_under_older_rules_is_checked_again(tmp_path):
    """An 8x8 image passed the old check (and its '.ok' says so); Ultralytics drops it: so do we now."""
    records, files = make_files(tmp_path / "cache", ["tiny", "fine"])
    from tests.unit.test_images import encode

    tiny = files["images/0.jpg"]
    tiny.write_bytes(encode("JPEG", (8, 8)))
    tiny.with_name(tiny.name + ".ok").write_text(".jpg")  # what the earlier trainer wrote
    result = write_dataset(tmp_path / "ds", records, files, 0.8)
    assert result.skipped == {"image_too_small": 1}
    assert not tiny.with_name(tiny.name + ".ok").exists()

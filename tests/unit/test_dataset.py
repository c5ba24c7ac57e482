"""write_dataset: only valid samples, counted skips, and never a file outside the dataset folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.fixtures.data import make_sample
from trainer import CLASS_NAMES
from trainer.dataset import safe_stem, write_dataset
from trainer.selection import Record


def make_files(cache: Path, ids: list[str], seed: int = 0) -> tuple[list[Record], dict[str, Path]]:
    """One cached image and label per id, under names that never come from the id."""
    cache.mkdir(parents=True, exist_ok=True)
    records, files = [], {}
    for n, rid in enumerate(ids):
        s = make_sample(seed * 1000 + n, size=48)
        img, lbl = cache / f"img{n}", cache / f"lbl{n}"
        img.write_bytes(s.image)
        lbl.write_text(s.label)
        records.append(Record(id=rid, image_object=f"images/{n}.jpg", label_object=f"labels/{n}.txt"))
        files[f"images/{n}.jpg"] = img
        files[f"labels/{n}.txt"] = lbl
    return records, files


def all_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def test_writes_images_labels_for_train_and_val_and_a_data_yaml(tmp_path):
    records, files = make_files(tmp_path / "cache", [f"r{i}" for i in range(6)])
    splits = {r.id: ("val" if i < 2 else "train") for i, r in enumerate(records)}
    result = write_dataset(tmp_path / "ds", records, files, splits)

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
    records, files = make_files(tmp_path / "cache", ["a", "b"])
    result = write_dataset(tmp_path / "ds", records, files, {"a": "train", "b": "val"})
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
    splits = {r.id: "train" for r in records}

    result = write_dataset(
        tmp_path / "ds", records, files, splits, missing={"images/1.jpg": "object not found"}
    )

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
    splits = {r.id: ("val" if i % 3 == 0 else "train") for i, r in enumerate(records)}
    root = tmp_path / "work" / "ds"

    result = write_dataset(root, records, files, splits)

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
    records, files = make_files(tmp_path / "cache", ["good", "bad"])
    files["images/1.jpg"].write_bytes(b"\x00" * 100)
    splits = {"good": "train", "bad": "train"}
    write_dataset(tmp_path / "ds", records, files, splits)

    good, bad = files["images/0.jpg"], files["images/1.jpg"]
    assert good.with_name(good.name + ".ok").read_text() == ".jpg"
    assert bad.with_name(bad.name + ".bad").read_text().startswith("bad_image\n")

    # The second build trusts the verdicts: the good image is not decoded again.
    good.write_bytes(b"garbage that would fail a new check")
    result = write_dataset(tmp_path / "ds", records, files, splits)
    assert result.counts["train"] == 1
    assert result.skipped == {"bad_image": 1}


def test_rebuilding_replaces_an_earlier_dataset_folder(tmp_path):
    records, files = make_files(tmp_path / "cache", ["a", "b", "c"])
    root = tmp_path / "ds"
    write_dataset(root, records, files, {"a": "train", "b": "train", "c": "val"})
    write_dataset(root, records[:1], files, {"a": "val"})
    assert len(all_files(root / "images")) == 1
    assert len(all_files(root / "labels" / "val")) == 1

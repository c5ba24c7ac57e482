"""Adversarial records on PostgreSQL and the GCS emulator, trained on as a user would: the report's counts add
up exactly (selected = trained + skipped by reason) and agree with what Ultralytics itself trained on."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.data import make_sample
from tests.fixtures.inference_api import psql, run_trainer
from tests.integration.conftest import FAST
from trainer.reconcile import read_label_caches

ARGS = ["--from-inferences", "--only-verified", "--base-model", "yolov8n.yaml", *FAST]


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


PHOTO = make_sample(4242).image


def add_adversarial_records(api) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    ids["good"] = api.add(18, "verified")
    ids["bom"] = api.add(1, "verified", label="\ufeff5 0.5 0.5 0.3 0.3\n", classes=(5,))
    ids["duplicate_rows"] = api.add(1, "corrected", label="2 0.4 0.4 0.2 0.2\n" * 3, classes=(2,))
    ids["tiny"] = api.add(1, "verified", image=tiny_jpeg())  # Ultralytics: "image size (8, 8) <10 pixels"
    ids["same_photo"] = api.add(2, "verified", image=PHOTO)  # one photo under two inference ids
    ids["background"] = api.add(3, "verified", label="", detections=0)  # reviewed: no waste in the photo
    ids["text_as_image"] = api.add(1, "verified", image=b"this is not a photo, it is a text file\n")
    ids["zip_as_image"] = api.add(1, "verified", image=b"PK\x03\x04" + bytes(1230))
    ids["class_6"] = api.add(1, "verified", label="6 0.5 0.5 0.2 0.2\n")
    ids["escape"] = api.add(1, "verified", image_object="images/../../../../etc/passwd")
    ids["rejected"] = api.add(2, "rejected")
    return ids


def dataset_dir(tmp: Path) -> Path:
    runs = list((tmp / "work" / "runs").iterdir())
    assert len(runs) == 1
    return runs[0] / "dataset"


def trained_samples(dsn: str, version: int) -> dict[str, str]:
    rows = psql(
        dsn,
        "SELECT v.number, s.sample_id, s.split FROM training_samples s "
        "JOIN model_versions v ON v.run_id = s.run_id",
    )
    return {i: split for n, i, split in (line.split("|") for line in rows.splitlines()) if int(n) == version}


def assert_counts_add_up(report: dict, tmp: Path) -> None:
    sel, data = report["selection"], report["data"]
    assert sel["selected"] == sel["new"] + sel["replayed"] + sel["history_val"]
    assert sel["selected"] == data["train"] + data["val"] + sum(data["skipped"].values()), (sel, data)
    # The compact result the operator copies into status says the same.
    compact = json.loads((tmp / "termination-log").read_text())["dataset"]
    assert compact["selected"] == compact["train"] + compact["val"] + compact["skipped"] == sel["selected"]


@pytest.mark.slow
def test_adversarial_records_the_counts_add_up_and_match_what_ultralytics_trained_on(hostile_world):
    api, models, env, tmp = hostile_world
    dsn = env["DATABASE_URL"]
    ids = add_adversarial_records(api)

    code, report, err = run_trainer([*ARGS, "--min-detections", "0", "--background-share", "0.1"], env)
    assert code == 0, err
    sel, data = report["selection"], report["data"]
    assert sel["rejected"] == 2 and sel["new"] == sel["selected"] == 30
    assert data["skipped"] == {
        "image_too_small": 1,
        "duplicate_image": 1,
        "background_over_cap": 1,  # 21 images with boxes: 2 backgrounds keep them within 10 %
        "bad_image": 2,
        "bad_label": 1,
        "missing_image": 1,
    }
    assert_counts_add_up(report, tmp)
    assert data["train"] + data["val"] == 23
    assert sum(data["backgrounds"].values()) == 2
    assert data["altered"] == {"duplicate_boxes_removed": 2}

    # What Ultralytics trained on, from its own label cache: exactly the report's images and boxes.
    caches = read_label_caches(dataset_dir(tmp))
    assert {s: len(c.boxes) for s, c in caches.items()} == {"train": data["train"], "val": data["val"]}
    assert sum(n == 0 for c in caches.values() for n in c.boxes.values()) == 2  # the backgrounds
    assert not [m for c in caches.values() for m in c.messages if "ignoring corrupt" in m or "duplicate" in m]
    assert data["ultralytics_check"] == {"images_checked": 23, "dropped": 0}

    # The registry lists exactly what was trained on; the same photo is there once, in one split.
    samples = trained_samples(dsn, 1)
    assert len(samples) == 23 and set(samples.values()) <= {"train", "val"}
    assert len(set(ids["same_photo"]) & set(samples)) == 1
    assert set(ids["bom"]) <= set(samples) and not set(ids["tiny"]) & set(samples)

    # Messages are for people: the uploads that are not photos are described by their bytes.
    examples = "\n".join(data["skipped_examples"])
    assert (
        f"{ids['text_as_image'][0]}: bad_image: not an image: starts with 'this is not a ph' (text?)"
        in examples
    )
    assert "(a ZIP file?), 1234 bytes" in examples
    assert not re.search(r"0x[0-9a-f]{6,}|BytesIO", examples)

    # Next run: 5 new records; most of the earlier training images were re-reviewed as rejected since.
    trained = sorted(i for i, split in samples.items() if split == "train")
    api.set_status(trained[: len(trained) - 6], "rejected")
    new = api.add(5, "verified")
    again = api.add(1, "verified", image=PHOTO)  # the same photo once more, under a third id
    code, report, err = run_trainer([*ARGS, "--replay-ratio", "1.0", "--promotion", "force"], env)
    assert code == 0, err
    sel, data = report["selection"], report["data"]
    # Re-reviewed since: counted, not trained (with the 2 rejected records newer than the first run's cutoff).
    assert sel["new"] == 6 and sel["rejected"] == len(trained) - 6 + 2
    assert (sel["replay_requested"], sel["replayed"]) == (6, 6)  # filled from the 6 still verified
    assert_counts_add_up(report, tmp)
    samples2 = trained_samples(dsn, 2)
    assert not set(ids["background"]) & set(samples2)  # --min-detections 1 again: no backgrounds
    assert set(new) <= set(samples2)
    first_copy = (set(ids["same_photo"]) & set(samples)).pop()
    # The photo keeps its split across runs, whatever id it arrives under.
    if again[0] in samples2:
        assert samples2[again[0]] == samples[first_copy]
    else:
        assert data["skipped"].get("duplicate_image", 0) >= 1

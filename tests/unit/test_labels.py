"""YOLO label and image checks: every bad case is a BadSample with the reason it is counted under."""

from __future__ import annotations

import random

import pytest

from tests.fixtures.data import make_sample
from trainer.labels import (
    MAX_BOXES,
    MAX_LABEL_BYTES,
    BadSample,
    Box,
    parse_label_file,
    parse_label_line,
    read_label,
)


def test_a_good_label_line_parses_into_a_box():
    assert parse_label_line("3 0.5 0.25 0.1 0.2") == Box(3, 0.5, 0.25, 0.1, 0.2)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("6 0.5 0.5 0.1 0.1", id="class-6"),
        pytest.param("-1 0.5 0.5 0.1 0.1", id="class-minus-1"),
        pytest.param("1.5 0.5 0.5 0.1 0.1", id="non-integer-class"),
        pytest.param("cat 0.5 0.5 0.1 0.1", id="word-class"),
        pytest.param("0 nan 0.5 0.1 0.1", id="nan"),
        pytest.param("0 0.5 inf 0.1 0.1", id="inf"),
        pytest.param("0 0.5 0.5 0.1 -inf", id="minus-inf"),
        pytest.param("0 0.5 0.5", id="3-fields"),
        pytest.param("0 0.5 0.5 0.1 0.1 0.9", id="6-fields"),
        pytest.param("0 1.0101 0.5 0.1 0.1", id="x-above-1.01"),
        pytest.param("0 0.5 -0.0101 0.1 0.1", id="y-below-minus-0.01"),
        pytest.param("0 0.5 0.5 -0.1 0.1", id="negative-width"),
        pytest.param("0 0.5 0.5 0.0000004 0.1", id="width-0-in-six-decimals"),
        pytest.param("5.5 0.5 0.5 0.1 0.1", id="class-5.5"),
        pytest.param("nan 0.5 0.5 0.1 0.1", id="nan-class"),
        pytest.param("0 0.5 0.5 1.5 0.1", id="w-above-1"),
        pytest.param("0 0.5 0.5 0 0.1", id="zero-width"),
        pytest.param("0 0.5 0.5 0.1 0", id="zero-height"),
        pytest.param("0 0.5 x 0.1 0.1", id="non-numeric-coordinate"),
    ],
)
def test_each_bad_label_line_is_refused_as_bad_label(line):
    with pytest.raises(BadSample) as exc:
        parse_label_line(line, 7)
    assert exc.value.reason == "bad_label"
    assert "line 7" in exc.value.detail


def test_a_bad_line_in_a_file_is_named_by_its_line_number():
    with pytest.raises(BadSample, match="line 3"):
        parse_label_file(b"0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\n9 0.5 0.5 0.1 0.1\n")


def test_a_label_file_that_is_not_utf8_is_bad_label():
    with pytest.raises(BadSample) as exc:
        parse_label_file(b"0 0.5 0.5 0.1 0.1\n\xff\xfe\x00garbage\n")
    assert exc.value.reason == "bad_label"


def test_a_label_file_over_the_byte_limit_is_refused_unread():
    data = b"0 0.5 0.5 0.1 0.1\n" * (MAX_LABEL_BYTES // 18 + 2)
    assert len(data) > MAX_LABEL_BYTES
    with pytest.raises(BadSample) as exc:
        parse_label_file(data)
    assert exc.value.reason == "label_too_large"


def test_a_label_file_with_too_many_boxes_is_refused():
    data = b"0 0.5 0.5 0.1 0.1\n" * (MAX_BOXES + 1)
    assert len(data) <= MAX_LABEL_BYTES
    with pytest.raises(BadSample) as exc:
        parse_label_file(data)
    assert exc.value.reason == "label_too_large"


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_an_empty_label_file_is_refused_as_empty_label(data):
    with pytest.raises(BadSample) as exc:
        parse_label_file(data)
    assert exc.value.reason == "empty_label"


def test_a_good_label_file_round_trips_through_box_lines():
    rng = random.Random(5)
    boxes = [Box(rng.randrange(6), *(round(rng.uniform(0.05, 0.95), 6) for _ in range(4))) for _ in range(50)]
    text = "\n".join(b.line() for b in boxes) + "\n"
    parsed = parse_label_file(text.encode())
    assert parsed == boxes
    assert "\n".join(b.line() for b in parsed) + "\n" == text


def test_a_label_file_with_crlf_and_blank_lines_parses():
    assert len(parse_label_file(b"0 0.5 0.5 0.1 0.1\r\n\r\n5 0.2 0.2 0.3 0.3\r\n")) == 2


def test_the_generated_sample_labels_parse():
    for seed in range(5):
        s = make_sample(seed)
        assert [b.cls for b in parse_label_file(s.label.encode())] == list(s.classes)


# Ultralytics' rules (ultralytics/data/utils.py:verify_image_label), which the trainer applies first.
@pytest.mark.parametrize(
    "line, box",
    [
        pytest.param("5.0 0.5 0.5 0.1 0.1", Box(5, 0.5, 0.5, 0.1, 0.1), id="class-5.0-is-5"),
        pytest.param("0 1.01 0.5 0.1 0.1", Box(0, 1.01, 0.5, 0.1, 0.1), id="x-1.01-within-tolerance"),
        pytest.param("0 0.5 -0.01 0.1 0.1", Box(0, 0.5, -0.01, 0.1, 0.1), id="y-minus-0.01-within-tolerance"),
        pytest.param("1 5e-1 0.5 1e-1 0.1", Box(1, 0.5, 0.5, 0.1, 0.1), id="exponent-notation"),
    ],
)
def test_lines_ultralytics_accepts_are_accepted(line, box):
    assert parse_label_line(line) == box


def test_a_label_with_a_utf8_byte_order_mark_is_a_valid_label():
    # Ultralytics reads labels as utf-8-sig; the mark is not part of the first class id.
    label = read_label("\ufeff5 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n".encode())
    assert [b.cls for b in label.boxes] == [5, 1]


def test_identical_rows_are_removed_and_counted_as_ultralytics_does():
    data = b"0 0.5 0.5 0.1 0.1\n0 0.50 0.5 0.1 0.10\n1 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n"
    label = read_label(data)
    assert [b.line() for b in label.boxes] == [
        "0 0.500000 0.500000 0.100000 0.100000",
        "1 0.500000 0.500000 0.100000 0.100000",
    ]
    assert label.duplicates_removed == 2


def test_rows_that_differ_only_beyond_six_decimals_are_duplicates_once_written():
    label = read_label(b"0 0.1234561 0.5 0.1 0.1\n0 0.1234564 0.5 0.1 0.1\n")
    assert len(label.boxes) == 1 and label.duplicates_removed == 1


def test_polygon_rows_train_as_their_enclosing_boxes():
    label = read_label(b"2 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n3 0.2 0.2 0.4 0.2 0.3 0.4\n")
    assert label.boxes == (Box(2, 0.3, 0.4, 0.4, 0.4), Box(3, 0.3, 0.3, 0.2, 0.2))
    assert label.segments_as_boxes == 2


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"2 0.1 0.2 0.5 0.2 0.5 0.6\n1 0.5 0.5 0.1 0.1\n", id="polygons-mixed-with-boxes"),
        pytest.param(b"2 0.1 0.2 0.5 0.2 0.5 0.6 0.7\n", id="odd-coordinate-count"),
        pytest.param(
            b"2 0.1 0.2 0.5 0.2 0.5 0.6\n2 0.1 0.2 0.5 0.2 0.5\n", id="a-6-field-row-among-polygons"
        ),
        pytest.param(b"2 0.1 0.2 1.5 0.2 0.5 0.6\n", id="polygon-point-outside"),
    ],
)
def test_polygon_files_ultralytics_refuses_are_bad_labels(data):
    with pytest.raises(BadSample) as exc:
        read_label(data)
    assert exc.value.reason == "bad_label"


@pytest.mark.parametrize("data", [b"", b"\n \n", b"\xef\xbb\xbf"], ids=["empty", "blank", "bom-only"])
def test_an_empty_label_file_is_a_background_only_when_allowed(data):
    assert read_label(data, allow_empty=True).boxes == ()
    with pytest.raises(BadSample) as exc:
        read_label(data)
    assert exc.value.reason == "empty_label"


def test_a_non_utf8_label_names_the_byte():
    with pytest.raises(BadSample, match="not UTF-8 text \\(byte 18\\)"):
        read_label(b"0 0.5 0.5 0.1 0.1\n\xff")

"""YOLO label and image checks: every bad case is a BadSample with the reason it is counted under."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from tests.fixtures.data import make_sample
from trainer.labels import (
    MAX_BOXES,
    MAX_LABEL_BYTES,
    BadSample,
    Box,
    check_image,
    parse_label_file,
    parse_label_line,
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
        pytest.param("0 1.01 0.5 0.1 0.1", id="x-above-1"),
        pytest.param("0 0.5 -0.01 0.1 0.1", id="y-below-0"),
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


def encode(fmt: str, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format=fmt)
    return buf.getvalue()


def test_a_good_jpeg_passes_with_the_jpg_suffix():
    assert check_image(make_sample(1).image) == ".jpg"


def test_a_good_png_passes_with_the_png_suffix():
    assert check_image(encode("PNG")) == ".png"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="zero-bytes"),
        pytest.param(random.Random(0).randbytes(4096), id="random-bytes"),
        pytest.param(
            make_sample(2, size=160).image[: len(make_sample(2, size=160).image) // 2], id="half-jpeg"
        ),
        pytest.param(encode("JPEG", (4, 4)), id="4x4-jpeg"),
        pytest.param(encode("PNG", (4, 4)), id="4x4-png"),
        pytest.param(encode("GIF"), id="unsupported-gif"),
        pytest.param(encode("PNG")[:60], id="truncated-png"),
    ],
)
def test_a_broken_or_unusable_image_fails_as_bad_image(data):
    with pytest.raises(BadSample) as exc:
        check_image(data)
    assert exc.value.reason == "bad_image"


def test_a_complete_jpeg_with_trailing_data_after_the_end_marker_passes():
    data = make_sample(3).image + random.Random(1).randbytes(8192).replace(b"\xff\xd9", b"\x00\x00")
    assert check_image(data) == ".jpg"

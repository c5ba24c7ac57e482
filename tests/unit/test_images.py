"""Image checks: Ultralytics' rules applied first, and messages a person can act on."""

from __future__ import annotations

import hashlib
import io
import random
import re

import pytest
from PIL import Image

from tests.fixtures.data import make_sample
from trainer.images import check_image, describe_bytes, plain_message
from trainer.labels import BadSample


def encode(fmt: str, size=(32, 32), **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_a_good_jpeg_passes_with_the_jpg_suffix_its_size_and_content_hash():
    data = make_sample(1).image
    info = check_image(data)
    assert (info.suffix, info.width, info.height) == (".jpg", 96, 96)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert not info.jpeg_restored


@pytest.mark.parametrize(
    "fmt, suffix", [("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tiff")]
)
def test_each_format_ultralytics_reads_passes_with_its_suffix(fmt, suffix):
    assert check_image(encode(fmt)).suffix == suffix


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="zero-bytes"),
        pytest.param(random.Random(0).randbytes(4096), id="random-bytes"),
        pytest.param(
            make_sample(2, size=160).image[: len(make_sample(2, size=160).image) // 2], id="half-jpeg"
        ),
        pytest.param(make_sample(2, size=160).image[:-2], id="jpeg-without-its-last-two-bytes"),
        pytest.param(encode("GIF"), id="unsupported-gif"),
        pytest.param(encode("PNG")[:60], id="truncated-png"),
    ],
)
def test_a_broken_or_unusable_image_fails_as_bad_image(data):
    with pytest.raises(BadSample) as exc:
        check_image(data)
    assert exc.value.reason == "bad_image"


@pytest.mark.parametrize("size", [(8, 8), (9, 200), (200, 9), (4, 4)])
def test_an_image_under_10_pixels_a_side_is_too_small_as_for_ultralytics(size):
    for fmt in ("JPEG", "PNG"):
        with pytest.raises(BadSample) as exc:
            check_image(encode(fmt, size))
        assert exc.value.reason == "image_too_small"
        assert f"{size[0]}x{size[1]} pixels" in exc.value.detail


def test_an_image_of_10_by_10_pixels_passes():
    assert check_image(encode("PNG", (10, 10))).width == 10


def test_a_complete_jpeg_with_trailing_data_passes_and_is_marked_for_ultralytics_restore():
    data = make_sample(3).image + random.Random(1).randbytes(8192).replace(b"\xff\xd9", b"\x00\x00")
    info = check_image(data)
    assert info.suffix == ".jpg" and info.jpeg_restored


def test_a_png_with_a_broken_chunk_checksum_fails_as_ultralytics_verify_does():
    data = bytearray(encode("PNG", (40, 40)))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    with pytest.raises(BadSample) as exc:
        check_image(bytes(data))
    assert exc.value.reason == "bad_image"


def test_a_zip_uploaded_as_an_image_is_described_by_its_bytes():
    data = b"PK\x03\x04" + bytes(1230)
    with pytest.raises(BadSample) as exc:
        check_image(data)
    assert (
        exc.value.detail
        == "not an image: starts with 'PK\\x03\\x04\\x00\\x00\\x00\\x00' (a ZIP file?), 1234 bytes"
    )


def test_a_zip_is_still_not_an_image_once_ultralytics_is_imported(tmp_path):
    """The trainer imports Ultralytics while the images download (trainer.yolo.WarmUp); Ultralytics then
    replaces PIL's Image.open with one that reaches for pi-heif on any file PIL cannot identify."""
    from trainer import yolo

    yolo.prepare_offline(tmp_path / "ultralytics")
    import ultralytics.utils.patches  # noqa: F401 - what the warm-up's import does to PIL

    data = b"PK\x03\x04" + bytes(1230)
    with pytest.raises(BadSample) as exc:
        check_image(data)
    assert exc.value.detail.startswith("not an image: starts with 'PK"), exc.value.detail


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"hello, this is a text file\n", "starts with 'hello, this is a' (text?), 27 bytes"),
        (b"%PDF-1.7\n...", "(a PDF document?)"),
        (b"<!DOCTYPE html><html>", "(an HTML page?)"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "(a HEIC image?)"),
        (bytes(range(200, 216)), "starts with '\\xc8\\xc9\\xca\\xcb\\xcc\\xcd\\xce\\xcf', 16 bytes"),
    ],
)
def test_bytes_are_described_for_people(data, expected):
    assert expected in describe_bytes(data)


@pytest.mark.parametrize(
    "data",
    [b"just text", b"PK\x03\x04" + bytes(100), random.Random(3).randbytes(300), encode("JPEG")[:200]],
)
def test_no_message_shows_a_memory_address(data):
    with pytest.raises(BadSample) as exc:
        check_image(data)
    assert not re.search(r"0x[0-9a-f]{6,}|object at|BytesIO", exc.value.detail), exc.value.detail


def test_plain_message_removes_object_reprs():
    exc = OSError("cannot identify image file <_io.BytesIO object at 0x7f6b2c1d9e40>")
    assert plain_message(exc) == "cannot identify image file"

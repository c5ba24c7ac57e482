"""Checks of images, with Ultralytics' rules (`ultralytics/data/utils.py:check_image`): pure, unit-tested.

| Ultralytics' rule                                                  | here                                       |
|---|---|
| PIL opens the file and `verify()` passes                           | same, and the whole image is decoded (a truncated JPEG fails here, not in an epoch): `bad_image` |
| format one of its image formats                                    | JPEG (and MPO, a camera JPEG), PNG, WebP, BMP, TIFF: `bad_image` otherwise |
| both sides at least 10 pixels, EXIF orientation applied            | same: `image_too_small`                    |
| a JPEG that does not end with the end-of-image marker is re-saved  | accepted, counted (`altered.jpeg_restored`) |

Messages are for people: a file that is not an image is described by its first bytes, never by a Python
object's repr.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from dataclasses import dataclass

from trainer.labels import BadSample

MIN_SIDE = 10  # Ultralytics: "image size ... <10 pixels"
IMAGE_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tiff"}
_EXIF_ORIENTATION = 274
_MEMORY_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>|\bat 0x[0-9a-fA-F]+")

# What a file is, by its first bytes: enough to tell a person what was uploaded in place of a photo.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"PK\x03\x04", "a ZIP file"),
    (0, b"%PDF", "a PDF document"),
    (0, b"GIF8", "a GIF image"),
    (0, b"\x1f\x8b", "gzip data"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (4, b"ftypheic", "a HEIC image"),
    (4, b"ftypheix", "a HEIC image"),
    (4, b"ftypmif1", "a HEIF image"),
    (4, b"ftypavif", "an AVIF image"),
    (4, b"ftyp", "an MP4/QuickTime file"),
    (0, b"\x1aE\xdf\xa3", "a WebM/Matroska video"),
    (0, b"<?xml", "an XML document (an SVG image?)"),
    (0, b"<svg", "an SVG image"),
    (0, b"<!doctype html", "an HTML page"),
    (0, b"<html", "an HTML page"),
    (0, b"{", "JSON text"),
    (0, b"\x7fELF", "a Linux executable"),
]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    suffix: str  # the file suffix of its real format
    sha256: str  # of the bytes: the same photo under two ids is one image
    width: int
    height: int
    jpeg_restored: bool = False  # Ultralytics re-saves a JPEG without an end marker at its end


def describe_bytes(data: bytes) -> str:
    """ "starts with 'PK\\x03\\x04' (a ZIP file?), 1234 bytes": what a person needs to find the bad upload."""
    head = data[:16]
    lowered = head.lower()
    kind = next((what for at, magic, what in _MAGIC if lowered[at : at + len(magic)] == magic.lower()), None)
    if kind is None:
        try:
            text = data[:512].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and all(c.isprintable() or c in "\r\n\t" for c in text):
            kind = "text"
    shown = repr(head[:8] if kind != "text" else head)[2:-1]  # the bytes as b'...' shows them, no b''
    return f"starts with '{shown}'" + (f" ({kind}?)" if kind else "") + f", {len(data)} bytes"


def plain_message(exc: BaseException) -> str:
    """An exception's text without memory addresses (`<_io.BytesIO object at 0x7f...>`), one line."""
    text = " ".join(str(exc).split())
    return _MEMORY_ADDRESS.sub("", text).replace("  ", " ").strip()[:200] or type(exc).__name__


def _oriented_size(im) -> tuple[int, int]:
    width, height = im.size
    try:
        if im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):  # rotated a quarter turn
            width, height = height, width
    except Exception:  # noqa: BLE001 - unreadable EXIF: Ultralytics keeps the stored size too
        pass
    return width, height


def _pil_open():
    """PIL's own Image.open. Importing Ultralytics (which the trainer's warm-up does while the images
    download) replaces it with one that, on a file PIL cannot identify, imports pi-heif or tries to install
    it; a ZIP uploaded as a photo must still read as "not an image", offline and at PIL's speed."""
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", None) or Image.open


def check_image(data: bytes) -> ImageInfo:
    """Everything Ultralytics checks, and a full decode. Returns what the dataset needs to know of it."""
    from PIL import ImageFile, UnidentifiedImageError

    if not data:
        raise BadSample("bad_image", "zero-byte file")
    # Another library in the process (Ultralytics) may switch truncated-image loading on: not here.
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    fmt = None
    open_image = _pil_open()
    try:
        with open_image(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt not in IMAGE_SUFFIX:
                raise BadSample(
                    "bad_image",
                    f"unsupported image format {fmt} (accepted: JPEG, PNG, WebP, BMP, TIFF), "
                    f"{describe_bytes(data)}",
                )
            im.verify()  # Ultralytics' own check (chunk checksums of a PNG, for instance); then the size
            width, height = _oriented_size(im)
            if min(width, height) < MIN_SIDE:
                raise BadSample(
                    "image_too_small",
                    f"{width}x{height} pixels; Ultralytics needs at least {MIN_SIDE}x{MIN_SIDE}",
                )
        with open_image(io.BytesIO(data)) as im:
            if fmt in ("JPEG", "MPO"):
                im.draft("RGB", (max(MIN_SIDE, im.width // 8), max(MIN_SIDE, im.height // 8)))  # 1/8 scale
            im.load()
    except BadSample:
        raise
    except UnidentifiedImageError:
        raise BadSample("bad_image", f"not an image: {describe_bytes(data)}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise BadSample("bad_image", f"cannot decode {fmt or 'image'}: {plain_message(exc)}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return ImageInfo(
        suffix=IMAGE_SUFFIX[fmt],
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        jpeg_restored=fmt == "JPEG" and not data.endswith(b"\xff\xd9"),
    )

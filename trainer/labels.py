"""Checks of YOLO label files and images: pure, so every bad case is unit-tested."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from trainer import CLASS_NAMES

MAX_LABEL_BYTES = 1 << 20  # 1 MiB: tens of thousands of boxes; larger files are refused unread
MAX_BOXES = 1000


class BadSample(Exception):
    """A sample that cannot be trained on; .reason is the counter it is reported under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Box:
    cls: int
    x: float
    y: float
    w: float
    h: float

    def line(self) -> str:
        return f"{self.cls} {self.x:.6f} {self.y:.6f} {self.w:.6f} {self.h:.6f}"


def parse_label_line(line: str, lineno: int = 1) -> Box:
    fields = line.split()
    if len(fields) != 5:
        raise BadSample("bad_label", f"line {lineno}: expected 5 fields (class x y w h), got {len(fields)}")
    try:
        cls = int(fields[0])
    except ValueError:
        raise BadSample("bad_label", f"line {lineno}: class id {fields[0]!r} is not an integer") from None
    if not 0 <= cls < len(CLASS_NAMES):
        raise BadSample("bad_label", f"line {lineno}: class id {cls} outside 0..{len(CLASS_NAMES) - 1}")
    try:
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        raise BadSample("bad_label", f"line {lineno}: coordinates must be numbers") from None
    for v in coords:
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise BadSample("bad_label", f"line {lineno}: coordinate {v} is not a finite number in [0, 1]")
    x, y, w, h = coords
    if w <= 0 or h <= 0:
        raise BadSample("bad_label", f"line {lineno}: box width and height must be positive")
    return Box(cls, x, y, w, h)


def parse_label_file(data: bytes) -> list[Box]:
    """All boxes of a label file, or BadSample naming the first bad line."""
    if len(data) > MAX_LABEL_BYTES:
        raise BadSample("label_too_large", f"{len(data)} bytes (limit {MAX_LABEL_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSample("bad_label", "label file is not UTF-8 text") from None
    boxes = [parse_label_line(line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(boxes) > MAX_BOXES:
        raise BadSample("label_too_large", f"{len(boxes)} boxes (limit {MAX_BOXES})")
    if not boxes:
        raise BadSample("empty_label", "label file has no boxes")
    return boxes


IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}


def check_image(data: bytes) -> str:
    """Decode the image fully (a truncated JPEG fails here, not in the middle of training).

    Returns the file suffix for its real format.
    """
    from PIL import Image, ImageFile

    if not data:
        raise BadSample("bad_image", "zero-byte file")
    # Another library in the process (Ultralytics) may switch truncated-image loading on: not here.
    previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt not in IMAGE_SUFFIX:
                raise BadSample("bad_image", f"unsupported image format {fmt}")
            if im.width < 8 or im.height < 8:
                raise BadSample("bad_image", f"image too small ({im.width}x{im.height})")
            if fmt == "JPEG":
                im.draft("RGB", (max(8, im.width // 8), max(8, im.height // 8)))  # decode fast at 1/8 scale
            im.load()
    except BadSample:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise BadSample("bad_image", f"cannot decode: {str(exc)[:200]}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return IMAGE_SUFFIX[fmt]

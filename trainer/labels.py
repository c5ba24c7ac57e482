"""Checks of YOLO label files: pure, so every bad case is unit-tested.

The rules are Ultralytics' (8.4, `ultralytics/data/utils.py:verify_image_label`), applied here first so that
every sample Ultralytics would drop is dropped and counted before training, and what is written is exactly
what Ultralytics trains on:

| Ultralytics' rule when it caches labels                              | here                                  |
|---|---|
| read as UTF-8, a byte-order mark allowed (`utf-8-sig`)               | same; not UTF-8: `bad_label`          |
| rows of 5 fields `class x y w h`; blank lines ignored                | same                                  |
| a row of more than 6 fields is a polygon: its box is min/max of its points; polygons and boxes never mixed | same (`altered.segments_as_boxes`) |
| class a whole number (`5` or `5.0`), 0 <= class < nc                 | same                                  |
| coordinates <= 1.01; >= -0.01 when width and height are >= 0         | same; NaN and infinity refused        |
| width or height 0 accepted                                           | refused (`bad_label`): a box of no size teaches nothing |
| identical rows removed                                               | same, on the written text (`altered.duplicate_boxes_removed`) |
| an empty label file: a background image                              | only with `--min-detections 0` (else `empty_label`) |

Our own limits: at most 1 MiB and 1,000 boxes per file (`label_too_large`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer import CLASS_NAMES

MAX_LABEL_BYTES = 1 << 20  # 1 MiB: tens of thousands of boxes; larger files are refused unread
MAX_BOXES = 1000
# Ultralytics accepts coordinates up to 1% outside [0, 1] (rounding in labelling tools) and clips them later.
COORD_MAX = 1.01
COORD_MIN = -0.01
DECIMALS = 6  # written labels hold 6 decimals: the checks apply to the value Ultralytics will read


class BadSample(Exception):
    """A sample that cannot be trained on; .reason is the counter it is reported under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Box:
    cls: int
    x: float
    y: float
    w: float
    h: float

    def line(self) -> str:
        return f"{self.cls} {self.x:.6f} {self.y:.6f} {self.w:.6f} {self.h:.6f}"


@dataclass(frozen=True, slots=True)
class LabelFile:
    """The boxes to write, and what was changed on the way (Ultralytics would change the same)."""

    boxes: tuple[Box, ...]
    duplicates_removed: int = 0
    segments_as_boxes: int = 0


def _number(text: str, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadSample("bad_label", f"line {lineno}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadSample("bad_label", f"line {lineno}: {what} {text!r} is not a finite number")
    return value


def _class_id(text: str, lineno: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise BadSample("bad_label", f"line {lineno}: class id {text!r} is not an integer") from None
    if not math.isfinite(value) or value % 1:
        raise BadSample("bad_label", f"line {lineno}: class id {text!r} is not an integer")
    cls = int(value)
    if not 0 <= cls < len(CLASS_NAMES):
        raise BadSample("bad_label", f"line {lineno}: class id {cls} outside 0..{len(CLASS_NAMES) - 1}")
    return cls


def _box(cls: int, coords: list[float], lineno: int) -> Box:
    x, y, w, h = (round(v, DECIMALS) + 0.0 for v in coords)  # + 0.0: no "-0.000000" in a written line
    for v in (x, y, w, h):
        if not COORD_MIN <= v <= COORD_MAX:
            raise BadSample(
                "bad_label",
                f"line {lineno}: coordinate {v} outside [{COORD_MIN}, {COORD_MAX}] (normalised 0..1, "
                "1% tolerance)",
            )
    if w <= 0 or h <= 0:
        raise BadSample("bad_label", f"line {lineno}: box width and height must be positive")
    return Box(cls, x, y, w, h)


def parse_label_line(line: str, lineno: int = 1) -> Box:
    """One `class x y w h` row."""
    fields = line.split()
    if len(fields) != 5:
        raise BadSample("bad_label", f"line {lineno}: expected 5 fields (class x y w h), got {len(fields)}")
    cls = _class_id(fields[0], lineno)
    return _box(cls, [_number(v, lineno, "coordinate") for v in fields[1:]], lineno)


def parse_segment_line(line: str, lineno: int = 1) -> Box:
    """One polygon row `class x1 y1 x2 y2 ...`: Ultralytics trains a detector on its enclosing box."""
    fields = line.split()
    coords = fields[1:]
    if len(coords) % 2 or len(coords) < 6:
        raise BadSample(
            "bad_label", f"line {lineno}: a polygon needs an even number of coordinates, at least 6"
        )
    cls = _class_id(fields[0], lineno)
    values = [_number(v, lineno, "coordinate") for v in coords]
    xs, ys = values[0::2], values[1::2]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return _box(cls, [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], lineno)


def read_label(data: bytes, *, allow_empty: bool = False) -> LabelFile:
    """The boxes of a label file, or BadSample naming the first bad line.

    allow_empty: a file with no boxes is a background image (else it is refused as `empty_label`).
    """
    if len(data) > MAX_LABEL_BYTES:
        raise BadSample("label_too_large", f"{len(data)} bytes (limit {MAX_LABEL_BYTES})")
    try:
        text = data.decode("utf-8-sig")  # as Ultralytics reads it: a byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        raise BadSample("bad_label", f"label file is not UTF-8 text (byte {exc.start})") from None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(rows) > MAX_BOXES:
        raise BadSample("label_too_large", f"{len(rows)} boxes (limit {MAX_BOXES})")
    segments = any(len(line.split()) > 6 for _, line in rows)
    if segments:
        for n, line in rows:
            if len(line.split()) == 5:
                raise BadSample("bad_label", f"line {n}: a box row in a file of polygon rows")
        boxes = [parse_segment_line(line, n) for n, line in rows]
    else:
        boxes = [parse_label_line(line, n) for n, line in rows]
    if not boxes and not allow_empty:
        raise BadSample("empty_label", "label file has no boxes")
    # Ultralytics removes identical rows of the file it reads, which is the one written from these lines.
    unique = tuple({b.line(): b for b in boxes}.values())
    return LabelFile(
        boxes=unique,
        duplicates_removed=len(boxes) - len(unique),
        segments_as_boxes=len(boxes) if segments else 0,
    )


def parse_label_file(data: bytes) -> list[Box]:
    """All distinct boxes of a label file with at least one box, or BadSample."""
    return list(read_label(data).boxes)

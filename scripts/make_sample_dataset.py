"""Writes a small synthetic YOLO dataset (coloured boxes for the six classes) for the demo. No downloads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.data import write_yolo_folder

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("folder", type=Path)
    p.add_argument("--images", type=int, default=60)
    a = p.parse_args()
    if (a.folder / "images").is_dir():
        print(f"sample dataset already at {a.folder}")
    else:
        write_yolo_folder(a.folder, a.images)
        print(f"wrote {a.images} sample images and labels to {a.folder}")

"""Writes a small synthetic YOLO dataset (coloured boxes for the six classes) for the demo. No downloads.

    python scripts/make_sample_dataset.py FOLDER --images 120 --weights Plastic=0.05    # Plastic rare
    python scripts/make_sample_dataset.py FOLDER --images 40 --seed 1 --weights Plastic=4

Each image holds one or two boxes; --weights makes a class rarer (< 1) or more common (> 1) than the
others (weight 1 each). The same arguments always write the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.data import write_yolo_folder
from trainer import CLASS_NAMES


def parse_weights(text: str) -> list[float]:
    """'Plastic=0.05,Glass=2' -> one weight per class, 1 for those not named."""
    weights = [1.0] * len(CLASS_NAMES)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in CLASS_NAMES:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected NAME=WEIGHT with NAME one of {', '.join(CLASS_NAMES)}"
            )
        try:
            weights[CLASS_NAMES.index(name)] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {value!r} is not a number") from None
    if any(w < 0 for w in weights) or not any(weights):
        raise argparse.ArgumentTypeError(f"{text!r}: weights must be >= 0 and not all 0")
    return weights


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--seed", type=int, default=0, help="a different seed writes different images")
    p.add_argument("--weights", type=parse_weights, default=None, metavar="NAME=W,...")
    a = p.parse_args()
    if (a.folder / "images").is_dir():
        print(f"sample dataset already at {a.folder}")
    else:
        write_yolo_folder(a.folder, a.images, seed=a.seed, weights=a.weights)
        print(f"wrote {a.images} sample images and labels to {a.folder}")

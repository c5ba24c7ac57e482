"""Download-cache lookups on a dataset folder (LocalBlobStore): cost per object as the folder grows.

`--dataset /path` (or the embedded default's local buckets) reads objects through LocalBlobStore. The cache
finds each object's generation with one listing per folder; each listing used to walk the whole tree, so a
dataset with F day folders cost F full walks (time per object grew with the folder count). This measures
ObjectCache._generations over trees of 8, 32 and 64 folders of 250 files.

    python bench/local_listing.py                       # records bench/RESULTS.md
    python bench/local_listing.py --trainer-path DIR    # DIR holds another trainer/ package, e.g. an old copy
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import commit, machine, now, update_results


def measure(folders: int, per_folder: int) -> dict:
    from trainer.blobstore import LocalBlobStore
    from trainer.fetch import ObjectCache

    root = Path(tempfile.mkdtemp(prefix="wd-bench-local-"))
    try:
        names = []
        for f in range(folders):
            folder = root / "bucket" / "images" / f"day{f:03d}"
            folder.mkdir(parents=True)
            for i in range(per_folder):
                (folder / f"{i}.jpg").write_bytes(b"x")
                names.append(f"images/day{f:03d}/{i}.jpg")
        cache = ObjectCache(root / "cache", LocalBlobStore(root / "bucket"))
        t0 = time.perf_counter()
        found = cache._generations(names)
        seconds = time.perf_counter() - t0
        assert len(found) == len(names)
        return {
            "folders": folders,
            "objects": len(names),
            "s": round(seconds, 3),
            "us_per_object": round(seconds / len(names) * 1e6),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainer-path", type=Path)
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    if a.trainer_path:
        sys.path.insert(0, str(a.trainer_path.resolve()))
    import trainer

    rows = [measure(folders, 250) for folders in (8, 32, 64)]
    result = {
        "benchmark": "local_listing",
        "trainer": str(Path(trainer.__file__).parent),
        "runs": rows,
        "machine": machine(),
        "date": now(),
        "commit": commit(),
    }
    print(json.dumps(result))
    if not a.no_record:
        key = "local_listing_other" if a.trainer_path else "local_listing"
        table = "\n".join(
            f"| {r['folders']} | {r['objects']} | {r['s']} | {r['us_per_object']} |" for r in rows
        )
        update_results(
            key,
            f"""## Cache lookups on a dataset folder{" (another trainer)" if a.trainer_path else ""}

`python bench/local_listing.py{" --trainer-path " + str(a.trainer_path) if a.trainer_path else ""}` on {result["date"]}, commit {result["commit"]}.
Trainer package: `{result["trainer"]}`. Machine: {result["machine"]}.

| folders | objects | seconds | us per object |
|---|---|---|---|
{table}

```json
{json.dumps(result)}
```
""",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

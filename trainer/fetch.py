"""Download objects into a local cache keyed by object name and generation, concurrently.

A second run finds its files by (store, name, generation) and downloads nothing it already has; the
generations come from listing each folder once (a page holds 1,000 objects), not from one request per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from trainer.blobstore import BlobInfo, BlobStore, NotFound, check_object_name
from trainer.files import PART_PREFIX
from trainer.parallel import bounded_map

log = logging.getLogger(__name__)
LIST_PREFIX_LIMIT = 64  # beyond this many folders, per-object lookups are cheaper than listings


@dataclass
class FetchResult:
    paths: dict[str, Path] = field(default_factory=dict)  # object name -> cached file
    missing: dict[str, str] = field(default_factory=dict)  # object name -> why it could not be had
    downloaded: int = 0
    cached: int = 0
    bytes_downloaded: int = 0


class ObjectCache:
    def __init__(self, root: Path, store: BlobStore, *, track_use: bool = False):
        """track_use: mark each cache hit as used now, for trim (only a size-bounded cache needs it)."""
        self.root = Path(root)
        self.store = store
        self.track_use = track_use
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, info: BlobInfo) -> Path:
        # The file name is a hash of the store's URI: nothing from the object name reaches the path.
        key = hashlib.sha256(self.store.uri(info.name).encode("utf-8", "surrogateescape")).hexdigest()
        return self.root / key[:2] / f"{key}.{info.generation}"

    def _generations(self, names: list[str]) -> dict[str, BlobInfo]:
        prefixes = {n.rsplit("/", 1)[0] + "/" if "/" in n else "" for n in names}
        wanted = set(names)
        infos: dict[str, BlobInfo] = {}
        if len(prefixes) <= LIST_PREFIX_LIMIT:
            # One listing per folder, all at once: a run with nothing new is mostly these round trips.
            with ThreadPoolExecutor(min(16, len(prefixes) or 1)) as pool:
                for listing in pool.map(self.store.list, sorted(prefixes)):
                    for info in listing:
                        if info.name in wanted:
                            infos[info.name] = info
        else:
            for name, info in zip(names, bounded_map(self.store.stat, names, 16), strict=True):
                if info:
                    infos[name] = info
        return infos

    def fetch(self, names: Iterable[str], concurrency: int = 16) -> FetchResult:
        result = FetchResult()
        valid: list[str] = []
        for name in dict.fromkeys(names):
            try:
                valid.append(check_object_name(name))
            except Exception as exc:  # noqa: BLE001
                result.missing[name] = str(exc)
        infos = self._generations(valid)
        todo: list[BlobInfo] = []
        for name in valid:
            info = infos.get(name)
            if info is None:
                result.missing[name] = "object not found"
                continue
            path = self.path_for(info)
            if path.is_file() and path.stat().st_size == info.size:
                if self.track_use:
                    os.utime(path)  # recently used: the last trim evicts
                result.paths[name] = path
                result.cached += 1
            else:
                todo.append(info)

        made: set[Path] = set()

        def download(info: BlobInfo) -> tuple[BlobInfo, Path | None, str | None]:
            dest = self.path_for(info)
            if dest.parent not in made:
                dest.parent.mkdir(parents=True, exist_ok=True)
                made.add(dest.parent)
            # A unique name that the download creates itself: one file creation per object, not two.
            tmp = str(dest.with_name(f"{PART_PREFIX}{uuid.uuid4().hex}"))
            try:
                try:
                    # Retrying transient failures (429, 5xx, resets, truncation) is the store's job.
                    self.store.download(info.name, Path(tmp), generation=info.generation)
                except NotFound as exc:
                    return info, None, str(exc)
                os.replace(tmp, dest)  # a cache file is complete or absent, never partial
                return info, dest, None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

        # Bounded: one future per object held at once made memory grow with the selection.
        for info, path, error in bounded_map(download, todo, concurrency):
            if path is None:
                result.missing[info.name] = error or "download failed"
            else:
                result.paths[info.name] = path
                result.downloaded += 1
                result.bytes_downloaded += info.size
        return result

    def trim(self, max_bytes: int, keep: Iterable[Path] = ()) -> TrimResult:
        """Evicts the least recently used files until the cache holds at most max_bytes.

        Files in `keep` (this run's) are never evicted, nor downloads in progress (another Job may share a
        persistent cache); a `.part-` file a crashed download left behind is removed after a day.
        """
        kept = {Path(p) for p in keep}
        files: dict[Path, tuple[float, int]] = {}
        sidecars: list[Path] = []  # the dataset step's image verdicts, "<file>.ok" / "<file>.bad"
        total = 0
        now = time.time()
        result = TrimResult()
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name.startswith(PART_PREFIX):
                    if now - st.st_mtime > 86400:
                        _unlink(Path(entry.path))
                    continue
                if entry.name.endswith((".ok", ".bad")):
                    sidecars.append(Path(entry.path))
                    continue
                total += st.st_size
                files[Path(entry.path)] = (st.st_mtime, st.st_size)
        for side in sidecars:
            if side.with_suffix("") not in files:
                _unlink(side)  # its file is gone
        for _, size, path in sorted((mtime, size, p) for p, (mtime, size) in files.items() if p not in kept):
            if total <= max_bytes:
                break
            if _unlink(path):
                for suffix in (".ok", ".bad"):
                    _unlink(path.with_name(path.name + suffix))
                total -= size
                result.removed += 1
                result.bytes_removed += size
        result.bytes_kept = total
        return result


@dataclass
class TrimResult:
    removed: int = 0
    bytes_removed: int = 0
    bytes_kept: int = 0


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:  # evicted by another Job sharing the cache
        return False

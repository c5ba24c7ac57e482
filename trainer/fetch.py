"""Download objects into a local cache keyed by object name and generation, concurrently.

A second run finds its files by (store, name, generation) and downloads nothing it already has; the
generations come from listing each folder once (a page holds 1,000 objects), not from one request per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from trainer.blobstore import BlobInfo, BlobStore, NotFound, check_object_name

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
    def __init__(self, root: Path, store: BlobStore):
        self.root = Path(root)
        self.store = store
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
            with ThreadPoolExecutor(16) as pool:
                for name, info in zip(names, pool.map(self.store.stat, names), strict=True):
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
            tmp = str(dest.with_name(f".part-{uuid.uuid4().hex}"))
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

        if todo:
            with ThreadPoolExecutor(max(1, concurrency)) as pool:
                for info, path, error in pool.map(download, todo):
                    if path is None:
                        result.missing[info.name] = error or "download failed"
                    else:
                        result.paths[info.name] = path
                        result.downloaded += 1
                        result.bytes_downloaded += info.size
        return result

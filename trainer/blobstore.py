"""Object stores: a GCS bucket in production, a local folder for the embedded default.

Both speak the same small interface. Generations make the download cache exact and let writes be
create-only (`if_generation_match=0`), which is how two runs never both write the same version.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import urllib3

from trainer.errors import ConfigError, StorageError


@dataclass(frozen=True, slots=True)
class BlobInfo:
    name: str
    generation: int
    size: int
    updated: datetime | None = None  # when the object was last written, where the listing says


class PreconditionFailed(StorageError):
    """A create-only or compare-and-swap write found the object changed."""


class NotFound(StorageError):
    pass


class BlobStore(Protocol):
    def uri(self, name: str) -> str: ...
    def list(self, prefix: str, limit: int | None = None) -> list[BlobInfo]: ...
    def stat(self, name: str) -> BlobInfo | None: ...
    def download(self, name: str, dest: Path, generation: int | None = None) -> None: ...
    def read_bytes(self, name: str) -> bytes | None: ...
    def upload_file(
        self,
        path: Path,
        name: str,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo: ...
    def upload_bytes(
        self,
        data: bytes,
        name: str,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo: ...
    def copy(self, src: str, dst: str, metadata: dict[str, str] | None = None) -> BlobInfo: ...
    def delete(self, name: str) -> None: ...


def check_object_name(name: str) -> str:
    """Object names come from data: refuse ones that are not plain relative keys."""
    if not name or name.startswith("/") or "\x00" in name:
        raise ConfigError(f"invalid object name {name!r}")
    if any(part in ("..", ".") for part in name.split("/")):
        raise ConfigError(f"object name {name!r} contains '.' or '..' segments")
    return name


class LocalBlobStore:
    """A folder that behaves like a bucket: atomic writes, generations from a counter file per object."""

    _lock = threading.Lock()

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        check_object_name(name)
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ConfigError(f"object name {name!r} escapes the store at {self.root}")
        return path

    def uri(self, name: str) -> str:
        return str(self.root / name)

    def _info(self, name: str, path: Path) -> BlobInfo:
        st = path.stat()
        updated = datetime.fromtimestamp(st.st_mtime, UTC)
        return BlobInfo(name=name, generation=st.st_mtime_ns, size=st.st_size, updated=updated)

    def list(self, prefix: str, limit: int | None = None) -> list[BlobInfo]:
        # Walk only the prefix's folder: a listing per folder of a large tree stays linear in its size.
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        out: list[BlobInfo] = []
        if not start.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for fname in sorted(filenames):
                if fname.startswith(".tmp-"):
                    continue
                path = Path(dirpath) / fname
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    out.append(self._info(name, path))
                    if limit is not None and len(out) >= limit:
                        return sorted(out, key=lambda i: i.name)
        return sorted(out, key=lambda i: i.name)

    def stat(self, name: str) -> BlobInfo | None:
        path = self._path(name)
        return self._info(name, path) if path.is_file() else None

    def download(self, name: str, dest: Path, generation: int | None = None) -> None:
        path = self._path(name)
        if not path.is_file():
            raise NotFound(f"{self.uri(name)} does not exist")
        shutil.copyfile(path, dest)

    def read_bytes(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.is_file() else None

    def _write(self, name: str, writer, if_generation_match: int | None) -> BlobInfo:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
            with self._lock:
                current = self.stat(name)
                if if_generation_match is not None:
                    have = current.generation if current else 0
                    if have != if_generation_match:
                        raise PreconditionFailed(
                            f"{self.uri(name)}: generation is {have}, expected {if_generation_match}"
                        )
                os.replace(tmp, path)
                # mtime_ns is the generation: make sure a rewrite always changes it.
                if current and path.stat().st_mtime_ns <= current.generation:
                    os.utime(path, ns=(current.generation + 1, current.generation + 1))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self._info(name, path)

    def upload_file(
        self,
        path: Path,
        name: str,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        def writer(f):
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f)

        return self._write(name, writer, if_generation_match)

    def upload_bytes(
        self,
        data: bytes,
        name: str,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        return self._write(name, lambda f: f.write(data), if_generation_match)

    def copy(self, src: str, dst: str, metadata: dict[str, str] | None = None) -> BlobInfo:
        src_path = self._path(src)
        if not src_path.is_file():
            raise NotFound(f"{self.uri(src)} does not exist")
        return self.upload_file(src_path, dst)

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        # A bucket has no folders: one left empty by the last object in it goes too.
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


def gcs_client():
    """The official client; the emulator (STORAGE_EMULATOR_HOST) gets anonymous credentials."""
    from google.cloud import storage

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"),
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator},
        )
    else:
        client = storage.Client()
    # More connections than the default 10, so concurrent downloads do not queue for a socket.
    import requests.adapters

    adapter = requests.adapters.HTTPAdapter(pool_connections=64, pool_maxsize=64, max_retries=0)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


class GCSBlobStore:
    def __init__(self, bucket: str, client=None):
        from google.api_core import exceptions

        self._exc = exceptions
        self.bucket_name = bucket
        self.client = client or gcs_client()
        self.bucket = self.client.bucket(bucket)
        endpoint = (self.client._connection.API_BASE_URL or "https://storage.googleapis.com").rstrip("/")
        self._media_base = f"{endpoint}/download/storage/v1"
        self._pool = urllib3.PoolManager(
            maxsize=64, retries=False, timeout=urllib3.Timeout(connect=10, read=120)
        )
        self._auth_lock = threading.Lock()

    def _auth_headers(self) -> dict[str, str]:
        """The client's own credentials (Workload Identity, a key, or anonymous for the emulator)."""
        creds = self.client._credentials
        headers: dict[str, str] = {}
        with self._auth_lock:
            if not creds.valid:
                import google.auth.transport.requests

                creds.refresh(google.auth.transport.requests.Request())
            creds.apply(headers)
        return headers

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def _wrap(self, exc: Exception, what: str) -> StorageError:
        if isinstance(exc, self._exc.PreconditionFailed):
            return PreconditionFailed(f"{what}: the object changed (precondition failed)")
        if isinstance(exc, self._exc.NotFound):
            return NotFound(f"{what}: not found")
        return StorageError(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")

    def list(self, prefix: str, limit: int | None = None) -> list[BlobInfo]:
        try:
            return [
                BlobInfo(b.name, int(b.generation), int(b.size or 0), b.updated)
                for b in self.client.list_blobs(
                    self.bucket,
                    prefix=prefix,
                    max_results=limit,
                    page_size=min(1000, limit or 1000),
                    # a third of the JSON to parse
                    fields="items(name,generation,size,updated),nextPageToken",
                )
            ]
        except Exception as exc:
            raise self._wrap(exc, f"listing {self.uri(prefix)}") from exc

    def stat(self, name: str) -> BlobInfo | None:
        try:
            blob = self.bucket.get_blob(name)
        except Exception as exc:
            raise self._wrap(exc, f"reading {self.uri(name)}") from exc
        return BlobInfo(name, int(blob.generation), int(blob.size or 0)) if blob else None

    def download(self, name: str, dest: Path, generation: int | None = None) -> None:
        """One GET of the object's media with the client's credentials, over a urllib3 pool.

        The client's Blob.download_to_filename costs ~5 ms of CPU per object in its own machinery (and the
        requests session ~2 ms); for thousands of small images that, not the network, bounds the data
        stage. This path checks what the client checks, length and CRC32C, and retries transient
        failures (429, 5xx, resets, truncated bodies) with backoff.
        """
        url = f"{self._media_base}/b/{quote(self.bucket_name, safe='')}/o/{quote(name, safe='')}?alt=media"
        if generation is not None:
            url += f"&generation={int(generation)}"
        delay, last = 0.5, ""
        for _ in range(6):
            try:
                resp = self._pool.request("GET", url, headers=self._auth_headers(), preload_content=True)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                if resp.status == 200:
                    data = resp.data
                    problem = _integrity_problem(resp.headers, data)
                    if problem is None:
                        dest.write_bytes(data)
                        return
                    last = problem
                elif resp.status == 404:
                    raise NotFound(f"downloading {self.uri(name)}: not found")
                elif resp.status in (401, 408, 429) or resp.status >= 500:
                    last = f"HTTP {resp.status}"
                else:
                    raise StorageError(
                        f"downloading {self.uri(name)}: HTTP {resp.status} {resp.data[:200]!r}"
                    )
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise StorageError(f"downloading {self.uri(name)}: gave up after 6 attempts ({last})")

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self.bucket.blob(name).download_as_bytes()
        except self._exc.NotFound:
            return None
        except Exception as exc:
            raise self._wrap(exc, f"downloading {self.uri(name)}") from exc

    def upload_file(
        self,
        path: Path,
        name: str,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        blob = self.bucket.blob(name)
        if metadata:
            blob.metadata = metadata
        try:
            blob.upload_from_filename(str(path), if_generation_match=if_generation_match, checksum="crc32c")
        except Exception as exc:
            raise self._wrap(exc, f"uploading {self.uri(name)}") from exc
        return BlobInfo(name, int(blob.generation), int(blob.size or 0))

    def upload_bytes(
        self,
        data: bytes,
        name: str,
        if_generation_match: int | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> BlobInfo:
        blob = self.bucket.blob(name)
        if metadata:
            blob.metadata = metadata
        try:
            blob.upload_from_string(data, content_type=content_type, if_generation_match=if_generation_match)
        except Exception as exc:
            raise self._wrap(exc, f"uploading {self.uri(name)}") from exc
        return BlobInfo(name, int(blob.generation), len(data))

    def copy(self, src: str, dst: str, metadata: dict[str, str] | None = None) -> BlobInfo:
        try:
            new = self.bucket.copy_blob(self.bucket.blob(src), self.bucket, dst)
            if metadata:
                new.metadata = metadata
                new.patch()
        except Exception as exc:
            raise self._wrap(exc, f"copying {self.uri(src)} to {self.uri(dst)}") from exc
        return BlobInfo(dst, int(new.generation), int(new.size or 0))

    def delete(self, name: str) -> None:
        try:
            self.bucket.blob(name).delete()
        except self._exc.NotFound:
            pass
        except Exception as exc:
            raise self._wrap(exc, f"deleting {self.uri(name)}") from exc


def _integrity_problem(headers, data: bytes) -> str | None:
    """A truncated or corrupted body: compares the length and the CRC32C the server sent."""
    length = headers.get("Content-Length")
    if (
        length is not None
        and headers.get("Content-Encoding") in (None, "identity")
        and int(length) != len(data)
    ):
        return f"truncated body ({len(data)} of {length} bytes)"
    for part in headers.get("x-goog-hash", "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "crc32c" and value:
            import google_crc32c

            if base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode() != value:
                return "CRC32C mismatch"
    return None


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/prefix -> (bucket, prefix without leading or trailing slash)."""
    if not uri.startswith("gs://"):
        raise ConfigError(f"not a gs:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")

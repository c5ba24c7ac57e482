"""Object stores: a GCS bucket in production, a local folder for the embedded default.

Both speak the same small interface. Generations make the download cache exact and let writes be
create-only (`if_generation_match=0`), which is how two runs never both write the same version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainer.errors import ConfigError, StorageError


@dataclass(frozen=True)
class BlobInfo:
    name: str
    generation: int
    size: int


class PreconditionFailed(StorageError):
    """A create-only or compare-and-swap write found the object changed."""


class NotFound(StorageError):
    pass


class BlobStore(Protocol):
    def uri(self, name: str) -> str: ...
    def list(self, prefix: str) -> list[BlobInfo]: ...
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
        return BlobInfo(name=name, generation=st.st_mtime_ns, size=st.st_size)

    def list(self, prefix: str) -> list[BlobInfo]:
        base = self.root
        out = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                name = path.relative_to(base).as_posix()
                if name.startswith(prefix):
                    out.append(self._info(name, path))
        return out

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

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def _wrap(self, exc: Exception, what: str) -> StorageError:
        if isinstance(exc, self._exc.PreconditionFailed):
            return PreconditionFailed(f"{what}: the object changed (precondition failed)")
        if isinstance(exc, self._exc.NotFound):
            return NotFound(f"{what}: not found")
        return StorageError(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")

    def list(self, prefix: str) -> list[BlobInfo]:
        try:
            return [
                BlobInfo(b.name, int(b.generation), int(b.size or 0))
                for b in self.client.list_blobs(self.bucket, prefix=prefix, page_size=1000)
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
        try:
            self.bucket.blob(name, generation=generation).download_to_filename(str(dest), checksum="auto")
        except Exception as exc:
            raise self._wrap(exc, f"downloading {self.uri(name)}") from exc

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
    ) -> BlobInfo:
        blob = self.bucket.blob(name)
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


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/prefix -> (bucket, prefix without leading or trailing slash)."""
    if not uri.startswith("gs://"):
        raise ConfigError(f"not a gs:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")

"""The kubelet's HTTPS endpoint for container logs, which the API server calls for `kubectl logs`.

GET /containerLogs/{namespace}/{pod}/{container}?follow=&previous=&tailLines=&limitBytes= over TLS with
the kubelet's serving certificate; only the API server's kubelet client certificate is let in.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# (namespace, pod, container, previous) -> (log file or None, is the container still running?)
Finder = Callable[[str, str, str, bool], tuple[Path | None, Callable[[], bool]]]
API_SERVER_CLIENT = "kube-apiserver-kubelet-client"


def tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    if limit is not None:
        data = data[:limit]
    return data


class _Handler(BaseHTTPRequestHandler):
    server: LogServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refuse(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        peer = dict(x[0] for x in self.connection.getpeercert()["subject"])  # type: ignore[union-attr]
        if peer.get("commonName") != API_SERVER_CLIENT:
            return self._refuse(403, f"{peer.get('commonName')} may not read logs")
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._refuse(404, f"no such endpoint: {url.path}")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        _, namespace, pod, container = parts
        path, running = self.server.find(namespace, pod, container, query.get("previous") == "true")
        if path is None:
            return self._refuse(404, f'container "{container}" in pod "{pod}" has no logs')
        lines = int(query["tailLines"]) if "tailLines" in query else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()  # no length: the body ends when the connection closes (HTTP/1.0)
        data = path.read_bytes() if path.exists() else b""
        self.wfile.write(tail(data, lines, limit))
        sent = len(data)
        while query.get("follow") == "true" and (limit is None or sent < limit):
            alive = running()
            data = path.read_bytes()[sent:]
            if data:
                self.wfile.write(data if limit is None else data[: limit - sent])
                self.wfile.flush()
                sent += len(data)
            elif not alive:
                break
            time.sleep(0.2)


class LogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, find: Finder, cert: Path, key: Path, ca: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.find = find
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.port = int(self.server_address[1])
        self._thread = threading.Thread(target=self.serve_forever, name="kubelet-logs", daemon=True)

    def start(self) -> LogServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

"""Kueue's real manager (sigs.k8s.io/kueue, built by build.sh) against the test control plane.

What differs from an in-cluster install, and why (../shared/FIELD-NOTES.md, "The real Kueue manager"):
- Kueue v0.15 stores v1beta1 and serves v1beta2 through a CRD conversion webhook its base CRDs lack: the
  webhook is added here, pointing at the manager's webhook server on a free 127.0.0.1 port.
- Its certificate rotator names only the in-cluster Service: the Secret it reads is created here up front
  (a CA it accepts, a serving certificate that is also valid for 127.0.0.1), and the serving files are
  written into its certDir.
- Its admission webhooks are not installed (no Service to reach them), so nothing suspends a Job for
  Kueue: a queued Job must be created suspended with the queue label, which is what the operator does.
- It runs with the admin kubeconfig instead of its ClusterRoles: the test checks the operator's RBAC,
  not Kueue's.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.controlplane.server import (
    ControlPlane,
    _kill_group,
    _live,
    build_binaries,
    die_with_parent,
    free_port,
)

BUILD_SH = Path(__file__).with_name("build.sh")
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
# The CRDs that Kueue serves in two versions (the others have one and need no conversion).
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")


def build(log: Path) -> Path:
    """Runs kueue/build.sh (a no-op when the binary and CRDs are cached) and returns the folder it prints."""
    return build_binaries(log, BUILD_SH)


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    sans: list[x509.GeneralName],
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        # The rotator replaces anything that expires within 90 days (and then only names the Service).
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    else:
        usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.add_extension(usage, critical=True).sign(issuer_key, hashes.SHA256())


def webhook_pki() -> dict[str, bytes]:
    """The Secret's data: a CA the rotator accepts (DNS name kueue-ca, key in PKCS#1) and a serving certificate
    for the in-cluster Service name (so the rotator keeps it) and for 127.0.0.1 (what the API server calls)."""
    pem = serialization.Encoding.PEM
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate("kueue-ca", ca_key, "kueue-ca", ca_key, [x509.DNSName("kueue-ca")], ca=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = [
        x509.DNSName(f"{SERVICE}.{NAMESPACE}.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = _certificate(f"{SERVICE}.{NAMESPACE}.svc", key, "kueue-ca", ca_key, sans, ca=False)
    return {
        "ca.crt": ca.public_bytes(pem),
        "ca.key": ca_key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
        "tls.crt": cert.public_bytes(pem),
        "tls.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }


class KueueManager:
    """Kueue's manager process with its CRDs installed, on free 127.0.0.1 ports."""

    def __init__(self, control_plane: ControlPlane, folder: Path, workdir: Path) -> None:
        self.cp = control_plane
        self.folder = Path(folder)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log_path = self.workdir / "kueue.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = float("nan")  # CRDs installed, Secret written and the manager ready
        self.ready_seconds = float("nan")  # the manager process alone, from spawn to /readyz

    def install_crds(self, ca_bundle: bytes) -> None:
        docs = []
        for path in sorted((self.folder / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                if doc["spec"]["names"]["plural"] in CONVERTED:
                    doc["spec"]["conversion"] = {
                        "strategy": "Webhook",
                        "webhook": {
                            "conversionReviewVersions": ["v1"],
                            "clientConfig": {
                                "url": f"https://127.0.0.1:{self.webhook_port}/convert",
                                "caBundle": base64.b64encode(ca_bundle).decode(),
                            },
                        },
                    }
                docs.append(doc)
        # Server-side: the CRDs are too large for the last-applied annotation.
        self.cp.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
        )
        names = [f"crd/{doc['metadata']['name']}" for doc in docs]
        self.cp.kubectl("wait", "--for=condition=Established", *names, "--timeout=30s")

    def start(self, timeout: float = 60.0) -> KueueManager:
        t0 = time.monotonic()
        pki = webhook_pki()
        certdir = self.workdir / "certs"
        certdir.mkdir(exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            (certdir / name).write_bytes(pki[name])
        (certdir / "tls.key").chmod(0o600)
        self.install_crds(pki["ca.crt"])
        self.cp.kubectl("create", "namespace", NAMESPACE, check=False)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "data": {k: base64.b64encode(v).decode() for k, v in pki.items()},
        }
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta1",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "leaderElection": {"leaderElect": False},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.metrics_port}"},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "certDir": str(certdir)},
            "internalCertManagement": {
                "enable": True,
                "webhookServiceName": SERVICE,
                "webhookSecretName": SECRET,
            },
            "integrations": {"frameworks": ["batch/job"]},
            # The visibility API server would need an APIService and its own certificates.
            "featureGates": {"VisibilityOnDemand": False},
        }
        config_path = self.workdir / "kueue-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                die_with_parent(
                    [
                        str(self.folder / "kueue"),
                        f"--config={config_path}",
                        f"--kubeconfig={self.cp.kubeconfig}",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        _live.append(self.proc)
        t1 = time.monotonic()
        self._wait_ready(t0 + timeout)
        self.ready_seconds = time.monotonic() - t1
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"kueue exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, http.client.HTTPException) as e:
                last = str(e)
            time.sleep(0.1)
        raise TimeoutError(f"kueue not ready at {url}: {last}\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            with contextlib.suppress(ValueError):
                _live.remove(self.proc)
            self.proc = None

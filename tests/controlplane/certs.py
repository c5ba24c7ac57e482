"""Certificates and kubeconfig files for the test control plane (generated with `cryptography`)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Client identities: (common name = user, organisation = group or None). The controller-manager is in
# system:masters because it runs without --use-service-account-credentials (one identity for all of its
# controllers, no per-controller ServiceAccounts to create at start-up); the scheduler has only what its
# bootstrap ClusterRoles grant, as in a real cluster.
CLIENTS = {
    "admin": ("admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", "system:masters"),
    "kube-scheduler": ("system:kube-scheduler", None),
    # The API server's identity towards the kubelet (container logs).
    "kubelet-client": ("kube-apiserver-kubelet-client", None),
}


@dataclass(frozen=True)
class CertFiles:
    """Paths of the files the API server, the kubelet and their clients need."""

    folder: Path
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    kubelet_serving_cert: Path  # the process kubelet's HTTPS endpoint on 127.0.0.1
    kubelet_serving_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of one of CLIENTS."""
        return self.folder / f"{name}.crt", self.folder / f"{name}.key"

    @property
    def admin_cert(self) -> Path:
        return self.client("admin")[0]

    @property
    def admin_key(self) -> Path:
        return self.client("admin")[1]


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate(folder: Path) -> CertFiles:
    """Writes a CA, the API server's serving cert for 127.0.0.1/localhost, a client cert per CLIENTS entry,
    a ServiceAccount signing key, and the kubelet's serving cert."""
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "waste-detection-test-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    files = CertFiles(
        folder=folder,
        ca_cert=folder / "ca.crt",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        sa_key=folder / "sa.key",
        sa_pub=folder / "sa.pub",
        kubelet_serving_cert=folder / "kubelet.crt",
        kubelet_serving_key=folder / "kubelet.key",
    )
    files.ca_cert.write_bytes(ca.public_bytes(pem))

    def issue(cert_path: Path, key_path: Path, subject: x509.Name, **kw: object) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path.write_bytes(_cert(subject, key, ca_name, ca_key, **kw).public_bytes(pem))  # type: ignore[arg-type]
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
        return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    issue(files.serving_cert, files.serving_key, name("kube-apiserver"), usage=[ExtendedKeyUsageOID.SERVER_AUTH],
          sans=[loopback, x509.IPAddress(ipaddress.ip_address("10.0.0.1")), x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc")])  # fmt: skip
    issue(files.kubelet_serving_cert, files.kubelet_serving_key, name("system:node:local-node"),
          usage=[ExtendedKeyUsageOID.SERVER_AUTH], sans=[loopback])  # fmt: skip
    for client, (cn, org) in CLIENTS.items():
        issue(*files.client(client), name(cn, org), usage=[ExtendedKeyUsageOID.CLIENT_AUTH])

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files.sa_key.write_bytes(_pem_key(sa_key))
    files.sa_key.chmod(0o600)
    files.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return files


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    user: str,
    *,
    token: str | None = None,
    token_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    namespace: str | None = None,
) -> Path:
    """Writes a one-context kubeconfig that authenticates with a bearer token (inline or a file that its
    writer may refresh) or a client certificate."""
    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if token_file is not None:
        credentials["tokenFile"] = str(token_file)
    if client_cert is not None and client_key is not None:
        credentials["client-certificate-data"] = _b64(client_cert)
        credentials["client-key-data"] = _b64(client_key)
    context: dict[str, str] = {"cluster": "test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path

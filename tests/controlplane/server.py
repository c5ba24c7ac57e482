"""The real control plane as local processes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

All built from the upstream Go modules by build.sh, on free 127.0.0.1 ports, each with its own client
certificate. The controller-manager runs the controllers a training cluster relies on (CONTROLLERS: Jobs,
Deployments and ReplicaSets, the garbage collector, ttl-after-finished, namespaces, ServiceAccounts, the
root CA publisher, pod GC); the Job controller's pod-failure back-off is shortened through the environment
(JOB_TIMINGS, read by kcm/main.go), nothing else differs from upstream. The API server runs its default
admission plugins, ServiceAccount included: a Pod needs its ServiceAccount to exist and gets the projected
token volume. What is missing is a kubelet: `tests/controlplane/kubelet` provides a process kubelet.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from kubernetes import client, config

from tests.controlplane import certs

BUILD_SH = Path(__file__).with_name("build.sh")
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "job-controller", "deployment-controller", "replicaset-controller", "ttl-after-finished-controller",
    "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "root-ca-certificate-publisher-controller", "pod-garbage-collector-controller",
)  # fmt: skip
# Upstream: a failed Pod is replaced after 10 s, doubling to 10 min, and Job events are batched for 1 s.
# Retries in tests would take minutes; these keep the same logic on a shorter clock.
JOB_TIMINGS = {
    "WD_JOB_POD_FAILURE_BACKOFF": "200ms",
    "WD_JOB_MAX_POD_FAILURE_BACKOFF": "2s",
    "WD_JOB_SYNC_BATCH_PERIOD": "200ms",
}

_live: list[subprocess.Popen[bytes]] = []


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it after `timeout` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Kill the whole group even when the leader is gone (stray children).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


@atexit.register
def _kill_all() -> None:
    while _live:
        _kill_group(_live.pop(), timeout=2.0)


def die_with_parent(cmd: list[str]) -> list[str]:
    """Prefix `cmd` so the kernel SIGKILLs it when the spawning thread dies (even if pytest is SIGKILLed).
    Only for processes whose spawning thread outlives them; a no-op without util-linux's setpriv."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_binaries(log: Path, script: Path = BUILD_SH) -> Path:
    """Runs a build script (build.sh: a no-op when the binaries are cached) and returns the folder it prints
    last; its stderr goes to `log`, whose end a failure shows."""
    with log.open("ab") as err:
        out = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, stderr=err, check=False)
    lines = out.stdout.decode().strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{script} failed (exit {out.returncode}); end of {log}:\n{tail}")
    return Path(lines[-1])


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on free 127.0.0.1 ports, with an
    admin kubeconfig (system:masters)."""

    def __init__(self, bin_dir: Path, workdir: Path) -> None:
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = ""
        self.start_seconds = float("nan")
        self.start_phases: dict[str, float] = {}  # seconds from start() until each component was ready
        self.build_seconds = float("nan")
        self.binaries_were_cached = False
        self._procs: list[subprocess.Popen[bytes]] = []
        self._names: dict[int, str] = {}
        self._certs: certs.CertFiles | None = None

    @property
    def certs(self) -> certs.CertFiles:
        assert self._certs is not None, "the control plane is not started"
        return self._certs

    # -- lifecycle -------------------------------------------------------------------------------
    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            die_with_parent([str(self.bin_dir / name), *args]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        self._procs.append(proc)
        self._names[proc.pid] = name
        _live.append(proc)
        return proc

    def _component_kubeconfig(self, name: str) -> Path:
        cert, key = self.certs.client(name)
        return certs.write_kubeconfig(
            self.workdir / f"{name}.kubeconfig",
            self.server,
            self.certs.ca_cert,
            name,
            client_cert=cert,
            client_key=key,
        )

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        self._certs = c = certs.generate(self.workdir / "pki")
        etcd_port, peer_port = free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                "--name=default",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        kubelet_cert, kubelet_key = c.client("kubelet-client")
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'pki'}",
                f"--tls-cert-file={c.serving_cert}",
                f"--tls-private-key-file={c.serving_key}",
                f"--client-ca-file={c.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={c.sa_pub}",
                f"--service-account-signing-key-file={c.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # Container logs (`kubectl logs`) are fetched from the kubelet over HTTPS, both sides verified.
                f"--kubelet-client-certificate={kubelet_cert}",
                f"--kubelet-client-key={kubelet_key}",
                f"--kubelet-certificate-authority={c.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-priority-and-fairness=false",
                "--watch-cache=false",  # starts ~40% faster on 2 cores; watches are served from etcd
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ],
        )
        self.kubeconfig = str(
            certs.write_kubeconfig(
                self.workdir / "admin.kubeconfig",
                self.server,
                c.ca_cert,
                "admin",
                client_cert=c.admin_cert,
                client_key=c.admin_key,
            )
        )
        self._wait_healthy(f"{self.server}/readyz", "kube-apiserver", deadline, client_cert=True)
        self.start_phases["kube-apiserver"] = time.monotonic() - t0
        # Both retry until the API server answers, but starting them after it keeps their logs readable.
        kcm_port, scheduler_port = free_port(), free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self._component_kubeconfig('kube-controller-manager')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--profiling=false",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--root-ca-file={c.ca_cert}",
                "--v=1",
            ],
            env=JOB_TIMINGS,
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self._component_kubeconfig('kube-scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_healthy(f"https://127.0.0.1:{kcm_port}/healthz", "kube-controller-manager", deadline)
        self.start_phases["kube-controller-manager"] = time.monotonic() - t0
        self._wait_healthy(f"https://127.0.0.1:{scheduler_port}/healthz", "kube-scheduler", deadline)
        self.start_phases["kube-scheduler"] = time.monotonic() - t0
        self.start_seconds = time.monotonic() - t0

    def _wait_healthy(self, url: str, name: str, deadline: float, client_cert: bool = False) -> None:
        """Polls `url` until it answers 200, failing early when any of our processes exited."""
        if client_cert:
            ctx = ssl.create_default_context(cafile=str(self.certs.ca_cert))
            ctx.load_cert_chain(str(self.certs.admin_cert), str(self.certs.admin_key))
        else:  # the components' self-signed serving certificates (their --cert-dir)
            ctx = ssl._create_unverified_context()
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{self._names[proc.pid]} exited with {proc.returncode}; {self._log_tails()}"
                    )
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, http.client.HTTPException) as e:  # not up yet
                last = str(e)
            time.sleep(0.1)
        raise TimeoutError(f"{name} not healthy at {url}: {last}; {self._log_tails()}")

    def _log_tails(self) -> str:
        parts = []
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            log = self.workdir / f"{name}.log"
            if log.exists():
                parts.append(f"--- {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in reversed(self._procs):  # scheduler, controller-manager, apiserver, then etcd
            _kill_group(proc)
            with contextlib.suppress(ValueError):
                _live.remove(proc)
        self._procs.clear()

    # -- clients ---------------------------------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        kubeconfig: str | None = None,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs the built kubectl (never the system one) against this control plane."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def api_client(self, kubeconfig: str | None = None) -> client.ApiClient:
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=kubeconfig or self.kubeconfig, client_configuration=cfg, persist_config=False
        )
        cfg.connection_pool_maxsize = 16  # the kubelet's pod workers share one client
        return client.ApiClient(cfg)

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_seconds: int = 86400) -> str:
        """Creates the ServiceAccount if missing and writes a kubeconfig with a TokenRequest token."""
        assert self._certs is not None
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            try:
                core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
            except client.ApiException as e:
                if e.status != 409:
                    raise
            token = core.create_namespaced_service_account_token(
                name,
                namespace,
                client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(
                        audiences=[SA_ISSUER], expiration_seconds=expiration_seconds
                    )
                ),
            ).status.token
        path = self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        user = f"system:serviceaccount:{namespace}:{name}"
        certs.write_kubeconfig(path, self.server, self._certs.ca_cert, user, token=token, namespace=namespace)
        return str(path)

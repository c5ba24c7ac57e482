"""`python -m waste_operator`: reads the configuration, then runs kopf on waste_operator.main."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
from urllib.parse import urlsplit

from .config import ENV_HELP, ConfigError, OperatorConfig

# kopf's own per-object lines ("Handler 'run_event' succeeded.", one per watch event) drown the decisions the
# operator logs itself (waste_operator: one line per created Job, phase change, restart); kopf's warnings and
# errors still show. LOG_LEVEL=DEBUG brings kopf's lines back.
KOPF_LOGGERS = ("kopf", "kopf.objects", "kopf.activities", "aiohttp.access")  # and a line per probe


def liveness_problem(endpoint: str) -> str | None:
    """Why the liveness endpoint cannot be served (its port taken by another instance, say), or None.

    kopf would log the failed bind and keep running without its probe, half alive until the kubelet kills it.
    """
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.port:
        return f"LIVENESS_ENDPOINT={endpoint!r} must be http://HOST:PORT/PATH"
    host = parts.hostname or "localhost"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as kopf's server binds it
            probe.bind(address)
    except OSError as error:
        return (
            f"cannot listen on LIVENESS_ENDPOINT {endpoint}: {error.strerror or error} "
            "(another operator instance on this port? set LIVENESS_ENDPOINT to a free port)"
        )
    return None


def usage() -> str:
    """The settings the operator reads, with their defaults: all from the environment."""
    defaults = {f.name: f.default for f in dataclasses.fields(OperatorConfig)}
    lines = ["environment (set by the operator's ConfigMap and Deployment):"]
    for name, attr, meaning in ENV_HELP:
        default = defaults[attr]
        if default is dataclasses.MISSING:
            shown = "required"
        elif default is None or default == ():
            shown = "default: none"
        elif isinstance(default, tuple):
            shown = "default: " + ",".join(default)
        else:
            shown = f"default: {default:g}" if isinstance(default, float) else f"default: {default}"
        lines.append(f"  {name:<26}{meaning} ({shown})")
    lines += [
        "",
        "Kubernetes credentials: the Pod's ServiceAccount in a cluster, else KUBECONFIG (or ~/.kube/config).",
        "Exit codes: 0 stopped cleanly, 2 a setting is missing or malformed.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m waste_operator",
        description="Runs the TrainingRun operator (kopf): one Job per TrainingRun, its status kept up to date.",
        epilog=usage(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(sys.argv[1:] if argv is None else argv)  # --help prints and exits before any connection
    import kopf

    try:
        config = OperatorConfig.from_env()
    except ConfigError as error:
        print(f"waste-operator: {error}", file=sys.stderr)
        return 2
    problem = liveness_problem(config.liveness_endpoint)
    if problem:
        print(f"waste-operator: {problem}", file=sys.stderr)
        return 2
    verbose = config.log_level == "DEBUG"
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)  # [ns/name] prefixes
    logging.getLogger("waste_operator").setLevel(config.log_level)
    if not verbose:
        for name in KOPF_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    from . import main as _handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        standalone=True,  # one replica (Deployment strategy Recreate): no peering
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

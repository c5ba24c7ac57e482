"""`python -m waste_operator`: reads the configuration, then runs kopf on waste_operator.main."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import ENV_HELP, ConfigError, OperatorConfig


def usage() -> str:
    """The settings the operator reads, with their defaults: all from the environment."""
    defaults = {f.name: f.default for f in dataclasses.fields(OperatorConfig)}
    lines = ["environment (set by the operator's ConfigMap and Deployment):"]
    for name, attr, meaning in ENV_HELP:
        default = defaults[attr]
        if default is dataclasses.MISSING:
            shown = "required"
        elif default is None:
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
    kopf.configure(log_format=kopf.LogFormat.FULL, log_prefix=True)  # [namespace/name] on kopf's lines
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

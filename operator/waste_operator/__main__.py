"""`python -m waste_operator`: reads the configuration, then runs kopf on waste_operator.main."""

from __future__ import annotations

import sys

import kopf

from .config import ConfigError, OperatorConfig


def main() -> int:
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

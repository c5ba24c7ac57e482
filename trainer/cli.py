"""`python -m trainer`: the training job's command line. Errors end as one line on stderr and an exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from trainer.errors import ConfigError, TrainerError
from trainer.report import logfmt, setup_logging

log = logging.getLogger("trainer")


def _versions(argv: Sequence[str]) -> int:
    from pathlib import Path

    from trainer.db import connect, migrate
    from trainer.registry import Registry

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: python -m trainer versions\n\nLists registered model versions (DATABASE_URL, or the "
            "embedded SQLite registry under TRAINER_LOCAL_DIR)."
        )
        return 0
    db = connect(
        os.environ.get("DATABASE_URL") or None,
        Path(os.environ.get("TRAINER_LOCAL_DIR") or ".wd-local").absolute(),
    )
    try:
        migrate(db)
        reg = Registry(db)
        print(format_versions(reg.versions(), reg.latest()))
    finally:
        db.close()
    return 0


def format_versions(versions, latest: int | None) -> str:
    from trainer import CLASS_NAMES

    short = [n[:5] for n in CLASS_NAMES]
    header = ["VERSION", "BASE", "mAP50", "mAP50-95", "P", "R", *short, "TRAIN", "VAL", "PROMOTED", "CREATED"]
    rows = [header]
    for v in versions:
        pc = [
            f"{(v.per_class.get(n) or {}).get('ap50', 0.0):.3f}" if n in v.per_class else "-"
            for n in CLASS_NAMES
        ]
        promoted = "latest" if v.number == latest else ("yes" if v.promoted else "no")
        rows.append(
            [
                v.name,
                f"v{v.base_version}" if v.base_version else "-",
                f"{v.map50 or 0:.3f}",
                f"{v.map50_95 or 0:.3f}",
                f"{v.precision or 0:.3f}",
                f"{v.recall or 0:.3f}",
                *pc,
                str(v.data.get("train", "-")),
                str(v.data.get("val", "-")),
                promoted,
                v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else "-",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    try:
        if argv and argv[0] == "versions":
            return _versions(argv[1:])
        from trainer.pipeline import Job
        from trainer.settings import load_settings

        settings = load_settings(argv)
        log.info(
            logfmt(
                event="start",
                run=settings.run_label or "local",
                uid=settings.run_key or "-",
                source="inferences" if settings.from_inferences else settings.dataset,
            )
        )
        Job(settings).run()
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainerError as exc:
        print(f"error: {exc.reason}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from trainer.db import redact

        log.debug("unexpected failure", exc_info=True)
        print(f"error: InternalError: {type(exc).__name__}: {redact(str(exc))[:500]}", file=sys.stderr)
        return 1

"""Crash points, so tests can kill the operator between two steps (WD_OPERATOR_CRASH_AT=<name>).

Off unless the variable is set; the names are the steps where a crash could leave work half done:
after-job-create, before-status-write, after-rollout-restart, after-schedule-run-create.
"""

from __future__ import annotations

import logging
import os

_AT = os.environ.get("WD_OPERATOR_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _AT and _AT == name:
        logging.getLogger("waste_operator").error("crash point %s reached: exiting as a crash would", name)
        logging.shutdown()
        os._exit(86)

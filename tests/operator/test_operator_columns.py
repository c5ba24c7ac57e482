"""`kubectl get trainingruns`: the columns tell the truth at a glance."""

from __future__ import annotations

import pytest

from tests.operator.harness import phase_is, wait_run
from tests.operator.test_operator_run import create_run

pytestmark = pytest.mark.controlplane


def rows(table: str) -> dict[str, list[str]]:
    """kubectl's table by column (an empty cell stays an empty string)."""
    header, *lines = table.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    cells = {line.split()[0]: [line[a:b].strip() for a, b in bounds] for line in lines}
    return cells | {"HEADER": header.split()}


def test_map50_shows_while_training_is_rounded_and_a_refused_model_says_it_was_not_promoted(
    control_plane, run_namespace, operator, api
):
    ns = run_namespace
    create_run(api, ns, "training", {"epochs": 3}, {"outcome": "hang"})
    create_run(api, ns, "refused", {"epochs": 2}, {"promoted": False, "map50": 0.05583333333333334})
    # killed by its deadline after one epoch of three: the row keeps where it stopped
    create_run(api, ns, "stopped", {"epochs": 3, "activeDeadlineSeconds": 10}, {"outcome": "hang"})

    wait_run(api.custom, ns, "training", lambda s: s.get("mAP50") is not None, 30)
    wait_run(api.custom, ns, "stopped", phase_is("Succeeded", "Failed"), 45)
    done = wait_run(api.custom, ns, "refused", phase_is("Succeeded", "Failed"), 45)["status"]
    assert done["phase"] == "Succeeded" and done["metrics"]["mAP50"] == 0.056 and done["mAP50"] == 0.056

    table = control_plane.kubectl("get", "tr", "-n", ns).stdout
    wide = control_plane.kubectl("get", "tr", "-n", ns, "-o", "wide").stdout
    print(f"--- kubectl get tr\n{table}--- kubectl get tr -o wide\n{wide}")
    got = rows(table)
    assert got["HEADER"] == ["NAME", "PHASE", "PROGRESS", "MAP50", "MODEL", "PROMOTED", "AGE"]
    # best mAP50 so far (the stand-in reports 0.3333 after epoch 1 of 3), to 3 places
    assert got["training"][1:6] == ["Running", "1/3", "0.333", "", ""], table
    # the gate refused the model: registered as v7, not deployed
    assert got["refused"][1:6] == ["Succeeded", "2/2", "0.056", "v7", "false"], table
    assert got["stopped"][1:6] == ["Failed", "1/3", "0.333", "", ""], table
    assert rows(wide)["HEADER"][-4:] == ["REASON", "JOB", "QUEUE", "PREEMPTED"]
    assert rows(wide)["stopped"][-4] == "DeadlineExceeded", wide

"""The Pod status a kubelet writes, as pure functions: its own conditions, container states, and the
status of the node faults it can be asked to show (OOM kill, image pull failure, eviction).

The kubelet owns PodReadyToStartContainers, Initialized, ContainersReady and Ready; other conditions
(PodScheduled from the scheduler, DisruptionTarget) are kept as they are, except the DisruptionTarget an
eviction adds, as the kubelet's eviction manager does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Obj = dict[str, Any]
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
TERMINAL = ("Succeeded", "Failed")
EVICTION_MESSAGE = (
    "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
    "Container {container} was using 1048576Ki, request is {request}, has larger consumption of memory. "
)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool, reason: str | None = None, message: str | None = None) -> Obj:
    c: Obj = {"type": type_, "status": "True" if status else "False", "lastProbeTime": None,
              "lastTransitionTime": now()}  # fmt: skip
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def waiting(reason: str, message: str | None = None) -> Obj:
    state: Obj = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def terminated(exit_code: int, reason: str, started: str | None, message: str = "", cid: str = "") -> Obj:
    state: Obj = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now()}
    if message:
        state["message"] = message
    if cid:
        state["containerID"] = cid
    return {"terminated": state}


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def container_status(
    container: Obj,
    state: Obj,
    *,
    ready: bool = False,
    restarts: int = 0,
    last_state: Obj | None = None,
    container_id: str = "",
    image_id: str = "",
) -> Obj:
    s: Obj = {
        "name": container["name"],
        "image": container.get("image") or "",
        "imageID": image_id,
        "ready": ready,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
        "lastState": last_state or {},
    }
    if container_id:
        s["containerID"] = container_id
    return s


def pod_status(
    old: Obj,
    phase: str,
    container: Obj,
    *,
    start_time: str,
    host_ip: str = "127.0.0.1",
    reason: str | None = None,
    message: str | None = None,
    extra_conditions: tuple[Obj, ...] = (),
) -> Obj:
    """The whole new status: `old` (the Pod's current status) with the kubelet's fields replaced.

    Conditions keep their lastTransitionTime while their status does not change, as the kubelet's status
    manager does, so a rewrite without a change is no transition."""
    ready = bool(container.get("ready")) and phase == "Running"
    terminal = phase in TERMINAL
    not_ready = None if ready else ("PodCompleted" if terminal else "ContainersNotReady")
    not_ready_msg = None if ready or terminal else f"containers with unready status: [{container['name']}]"
    # The Pod's sandbox exists from the first pull or start attempt until the Pod is terminal.
    creating = (container["state"].get("waiting") or {}).get("reason") == "ContainerCreating"
    sandbox = not terminal and not creating
    mine = [
        condition("PodReadyToStartContainers", sandbox),
        condition("Initialized", True),
        condition("Ready", ready, not_ready, not_ready_msg),
        condition("ContainersReady", ready, not_ready, not_ready_msg),
    ]
    by_type = {c["type"]: c for c in extra_conditions}
    previous = {c["type"]: c for c in old.get("conditions") or []}
    conditions = []
    for c in [*mine, *by_type.values()]:
        before = previous.get(c["type"])
        if before and before.get("status") == c["status"]:
            c["lastTransitionTime"] = before.get("lastTransitionTime") or c["lastTransitionTime"]
        conditions.append(c)
    kept = [
        c
        for c in old.get("conditions") or []
        if c["type"] not in KUBELET_CONDITIONS and c["type"] not in by_type
    ]
    status: Obj = {
        "phase": phase,
        "conditions": conditions + kept,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": host_ip,
        "podIPs": [{"ip": host_ip}],
        "startTime": old.get("startTime") or start_time,
        "containerStatuses": [container],
    }
    if old.get("qosClass"):  # set by the API server at creation; it refuses a change
        status["qosClass"] = old["qosClass"]
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return status


# -- node faults ------------------------------------------------------------------------------------
def pull_failure(image: str, backoff: bool) -> Obj:
    """ErrImagePull first, ImagePullBackOff on the next attempts, as with an image the registry lacks."""
    cause = (
        f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
        f"{image}: not found"
    )
    if backoff:
        return waiting("ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {cause}')
    return waiting("ErrImagePull", f"rpc error: code = NotFound desc = {cause}")


def eviction(container: Obj) -> tuple[str, str, Obj]:
    """(reason, message, DisruptionTarget condition) of a Pod evicted for memory pressure, as the
    eviction manager writes them."""
    request = ((container.get("resources") or {}).get("requests") or {}).get("memory", "0")
    message = EVICTION_MESSAGE.format(container=container["name"], request=request)
    return "Evicted", message, condition("DisruptionTarget", True, "TerminationByKubelet", message)

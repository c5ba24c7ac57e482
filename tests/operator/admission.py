"""Helpers for the admission policies' tests, which share one API server for the whole session."""

from __future__ import annotations

import json

SHIPPED_BINDINGS = (
    "trainingruns.training.wastedetection.io",
    "trainingrun-status.training.wastedetection.io",
)
# A namespace selector no namespace matches.
NOWHERE = {"matchLabels": {"test.waste-detection.io/no-namespace-has-this": "true"}}


def retire_bindings(control_plane, *names: str) -> None:
    """Makes bindings match no namespace instead of deleting them: an API server stops resolving ConfigMap
    parameters for good once no binding uses them (kubernetes/kubernetes#130887), which would break every
    later policy test of the session."""
    patch = json.dumps({"spec": {"matchResources": {"namespaceSelector": NOWHERE}}})
    for name in names:
        control_plane.kubectl(
            "patch", "validatingadmissionpolicybinding", name, "--type=merge", "-p", patch, check=False
        )


def activate_bindings(control_plane, *names: str) -> None:
    """Undoes retire_bindings: the bindings match every namespace again, as shipped (applying the manifests
    again keeps a selector that another client set)."""
    patch = json.dumps({"spec": {"matchResources": {"namespaceSelector": {"matchLabels": None}}}})
    for name in names:
        control_plane.kubectl("patch", "validatingadmissionpolicybinding", name, "--type=merge", "-p", patch)

"""The README's way of pinning the deployed images by digest (docs/examples/pinned/) renders as said."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.operator.harness import ROOT

pytestmark = pytest.mark.controlplane
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def test_the_pinned_overlay_sets_both_images_by_digest(control_plane):
    rendered = control_plane.kubectl("kustomize", str(ROOT / "docs" / "examples" / "pinned")).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    (operator,) = docs[("Deployment", "waste-operator")]["spec"]["template"]["spec"]["containers"]
    assert operator["image"].startswith("registry.example.com/waste-detection/operator@sha256:")
    assert DIGEST.search(operator["image"])
    trainer = docs[("ConfigMap", "waste-operator-config")]["data"]["TRAINER_IMAGE"]
    assert trainer.startswith("registry.example.com/waste-detection/trainer@") and DIGEST.search(trainer)
    # the rest of the base is untouched
    assert ("CustomResourceDefinition", "trainingruns.training.wastedetection.io") in docs

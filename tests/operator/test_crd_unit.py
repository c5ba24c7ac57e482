"""Static checks of the CRD and the manifests: defaults, declared status fields, least privilege."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import yaml
from waste_operator.jobs import JOB_DEFAULTS, RESOURCE_DEFAULTS, TRAINER_DEFAULTS
from waste_operator.status import status_from

from tests.operator.conftest import make_run
from tests.operator.test_status_unit import RESULT, cond, job

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "trainingrun.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]["properties"]
STATUS = SCHEMA["properties"]["status"]


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "manifests" / name).read_text()) if d]


def test_names():
    names = CRD["spec"]["names"]
    assert CRD["spec"]["group"] == "training.wastedetection.io" and VERSION["name"] == "v1alpha1"
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "TrainingRun",
        "trainingruns",
        ["tr"],
        ["ml"],
    )
    assert CRD["spec"]["scope"] == "Namespaced" and VERSION["subresources"] == {"status": {}}


def test_schema_defaults_equal_the_trainers():
    for field, value in {**TRAINER_DEFAULTS, **JOB_DEFAULTS}.items():
        assert SPEC[field].get("default") == value, field  # None: optional, no default
    for field, value in RESOURCE_DEFAULTS.items():
        assert SPEC["resources"]["properties"][field]["default"] == value, field
    assert SPEC["promotion"]["properties"]["mode"]["default"] == "gate"
    inferences = SPEC["source"]["properties"]["fromInferences"]["properties"]
    assert inferences["onlyVerified"]["default"] is True and inferences["allTime"]["default"] is False
    assert SPEC["suspend"]["default"] is False


def test_immutability_rule_covers_every_field_but_suspend():
    rules = SCHEMA["properties"]["spec"]["x-kubernetes-validations"]
    (rule,) = [r["rule"] for r in rules if "immutable" in r["message"]]
    for field in SPEC:
        assert (f"self.{field} ==" in rule) == (field != "suspend"), field


def test_printer_columns():
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")] == [
        "Phase",
        "Progress",
        "mAP50",
        "Model",
        "Promoted",
        "Age",
    ]
    assert columns["Reason"]["priority"] == 1 and columns["Job"]["priority"] == 1
    # filled while training (the operator copies the trainer's best mAP50), not only at the end
    assert columns["mAP50"]["jsonPath"] == ".status.mAP50"
    assert columns["Promoted"] == {"name": "Promoted", "type": "boolean", "jsonPath": ".status.promoted"}


def declared(schema: dict, value, path: str) -> list[str]:
    """Paths in `value` that `schema` does not declare (the API server would drop them silently)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            return [] if schema.get("x-kubernetes-preserve-unknown-fields") else [path]
        missing = []
        for key, item in value.items():
            if key not in props:
                missing.append(f"{path}.{key}")
            else:
                missing += declared(props[key], item, f"{path}.{key}")
        return missing
    if isinstance(value, list):
        return [m for item in value for m in declared(schema["items"], item, f"{path}[]")]
    return []


def test_every_status_field_written_is_declared():
    now = datetime(2025, 6, 1, tzinfo=UTC)
    done = {
        "metadata": {"name": "p", "creationTimestamp": "2025-06-01T00:00:00Z"},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": json.dumps(RESULT)}}}
            ],
        },
    }
    run = make_run()
    run["status"] = {"phase": "Running"}
    written = status_from(job([cond("Complete")], active=0, succeeded=1), [done], run, now, 900)
    written["progress"] = {"epoch": 1, "epochs": 2, "bestMAP50": 0.1, "stage": "Training", "text": "1/2"}
    written["progress"]["updatedAt"] = "2025-06-01T00:00:00Z"
    written["deploymentRestart"] = {"namespace": "n", "name": "a", "restartedAt": "x", "error": "", "at": "y",
                                    "attempts": 2, "nextAttemptAt": "z", "gaveUp": False}  # fmt: skip
    assert declared(STATUS, written, "status") == []


def test_rbac_is_least_privilege():
    docs = load("operator-rbac.yaml") + load("trainer-rbac.yaml")
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert "secrets" not in rule["resources"] and "pods/exec" not in rule["resources"]
    trainer = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "waste-trainer")
    assert trainer["rules"] == [
        # list: a starting trainer ends the registry rows of its namespace's deleted or failed runs
        {
            "apiGroups": ["training.wastedetection.io"],
            "resources": ["trainingruns"],
            "verbs": ["get", "list"],
        },
        {
            "apiGroups": ["training.wastedetection.io"],
            "resources": ["trainingruns/status"],
            "verbs": ["get", "patch"],
        },
    ]


def test_operator_deployment_is_single_recreate_hardened_and_probed():
    (deployment,) = load("operator-deployment.yaml")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "waste-operator"
    assert (
        pod["securityContext"]["runAsNonRoot"]
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (config,) = load("operator-config.yaml")
    assert config["data"]["LIVENESS_ENDPOINT"].endswith(":8080/healthz")
    from waste_operator.config import OperatorConfig

    parsed = OperatorConfig.from_env(config["data"])  # the shipped ConfigMap is valid as it stands
    assert parsed.cache_claim is None and parsed.cache_max_gb == 50.0


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (ROOT / "manifests" / resource).exists(), resource


def test_ingress_to_the_operator_and_trainer_pods_is_denied(config):
    from waste_operator.jobs import build_job

    policies = load("network-policy.yaml")
    (deployment,) = load("operator-deployment.yaml")
    pods = {
        "operator": deployment["spec"]["template"]["metadata"]["labels"],
        "trainer": build_job(make_run(), config)["spec"]["template"]["metadata"]["labels"],
    }
    for name, labels in pods.items():
        selecting = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert len(selecting) == 1, name
        (policy,) = selecting
        assert policy["spec"]["policyTypes"] == ["Ingress"] and not policy["spec"].get("ingress"), name


def test_admission_policies_read_the_operators_own_configmap():
    (config,) = load("operator-config.yaml")
    docs = load("admission-policy.yaml")
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert {b["spec"]["policyName"] for b in bindings} == policies and len(policies) == 2
    for binding in bindings:
        ref = binding["spec"]["paramRef"]
        assert (ref["name"], ref["namespace"]) == (
            config["metadata"]["name"],
            config["metadata"]["namespace"],
        )
        assert binding["spec"]["validationActions"] == ["Deny"]
    for key in ("WATCH_NAMESPACES", "TRAINER_IMAGE", "TRAINER_IMAGE_PREFIXES", "TRAINER_SERVICE_ACCOUNT"):
        assert key in config["data"], key

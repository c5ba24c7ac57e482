"""build_job: the one Job of a TrainingRun, without a cluster."""

from __future__ import annotations

import copy

from waste_operator.jobs import build_job, is_owned_by, job_name, trainer_args

from tests.operator.conftest import make_run


def test_job_name_is_deterministic_short_and_unique_per_uid():
    run = make_run("a" * 200)
    assert job_name(run) == job_name(copy.deepcopy(run))
    assert len(job_name(run)) <= 63
    other = make_run("a" * 200)
    other["metadata"]["uid"] = "uid-other"
    assert job_name(other) != job_name(run)
    assert job_name(make_run("nightly")).startswith("tr-nightly-")


def test_defaults_give_the_contract_args_in_order():
    assert trainer_args({}) == [
        "--epochs", "50", "--batch-size", "16", "--optimizer", "auto", "--img-size", "640",
        "--patience", "10", "--device", "auto", "--base-model", "yolov8n.pt", "--train-split", "0.8",
        "--min-detections", "1", "--replay-ratio", "1.0", "--history-val", "1000",
        "--from-inferences", "--only-verified", "--promotion", "gate",
    ]  # fmt: skip


def test_dataset_source_and_flags():
    args = trainer_args(
        {
            "epochs": 3,
            "source": {"dataset": {"uri": "gs://wd-datasets/ds/v1"}},
            "promotion": {"mode": "force"},
            "replayRatio": 0.5,
        }
    )
    assert args[args.index("--epochs") + 1] == "3"
    assert args[args.index("--dataset") + 1] == "gs://wd-datasets/ds/v1"
    assert "--from-inferences" not in args
    assert args[-2:] == ["--promotion", "force"]
    assert args[args.index("--replay-ratio") + 1] == "0.5"
    all_time = trainer_args({"source": {"fromInferences": {"onlyVerified": False, "allTime": True}}})
    assert "--only-verified" not in all_time and "--all-time" in all_time
    tuned = trainer_args({"optimizer": "SGD", "learningRate": 0.02})
    assert tuned[tuned.index("--optimizer") : tuned.index("--optimizer") + 4] == [
        "--optimizer", "SGD", "--learning-rate", "0.02"
    ]  # fmt: skip


def test_every_spec_the_crd_admits_gives_args_the_real_trainer_accepts():
    """The contract from the trainer's side: its own parser and checks take what the operator passes."""
    from trainer.settings import load_settings

    env = {"DATABASE_URL": "postgresql://u@db:5432/x", "GCS_MODELS_BUCKET": "m", "GCS_IMAGES_BUCKET": "i"}
    for spec in (
        {},
        {"optimizer": "AdamW", "learningRate": 0.003, "epochs": 3, "replayRatio": 0.0, "historyVal": 0},
        {
            "source": {"fromInferences": {"onlyVerified": False, "allTime": True}},
            "promotion": {"mode": "skip"},
        },
        {
            "source": {"dataset": {"uri": "gs://wd-datasets/ds/v1"}},
            "device": "0,1",
            "baseModel": "yolov8n.yaml",
        },
        {"batchSize": "auto", "resources": {"gpus": 4}},
    ):
        s = load_settings(trainer_args(spec), env)
        assert s.epochs == spec.get("epochs", 50) and s.optimizer == spec.get("optimizer", "auto")
        assert s.learning_rate == spec.get("learningRate") and s.history_val == spec.get("historyVal", 1000)


def test_job_spec_env_security_and_owner(config):
    run = make_run(
        spec={"resources": {"gpus": 2, "cpu": "8", "memory": "32Gi"}, "backoffLimit": 1},
        labels={"team": "ml", "app.kubernetes.io/instance": "argo-app", "argocd.argoproj.io/x": "y"},
    )
    job = build_job(run, config)
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "waste-detection-operator"
    assert meta["labels"]["training.wastedetection.io/trainingrun"] == "nightly"
    assert meta["labels"]["team"] == "ml"
    assert "app.kubernetes.io/instance" not in meta["labels"]
    assert not any(k.startswith("argocd.argoproj.io/") for k in meta["labels"])
    assert "generateName" not in meta
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "training.wastedetection.io/v1alpha1",
            "kind": "TrainingRun",
            "name": "nightly",
            "uid": "uid-1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert is_owned_by(job, run)
    assert spec["backoffLimit"] == 1 and spec["ttlSecondsAfterFinished"] == 86400
    # strict validators (kubeconform, kube-score) refuse onPodConditions without a status
    rules = spec["podFailurePolicy"]["rules"]
    assert {"type": "DisruptionTarget", "status": "True"} in rules[1]["onPodConditions"]
    assert all(c.get("status") for r in rules for c in r.get("onPodConditions", []))
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "waste-trainer"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == config.trainer_image
    assert container["command"] == ["python", "-m", "trainer"]
    assert container["resources"] == {
        # the /tmp emptyDir's sizeLimit, requested: scheduled where it fits, not evicted midway
        "requests": {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "50Gi"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["runAsNonRoot"]
    assert sc["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "waste-detection-db", "key": "database-url"}
    }
    assert {
        k: env[k]["value"]
        for k in ("GCS_MODELS_BUCKET", "TRAININGRUN_NAME", "TRAININGRUN_UID", "TRAINER_TERMINATION_LOG")
    } == {
        "GCS_MODELS_BUCKET": "wd-models",
        "TRAININGRUN_NAME": "nightly",
        "TRAININGRUN_UID": run["metadata"]["uid"],  # the run's identity for the trainer
        "TRAINER_TERMINATION_LOG": "/dev/termination-log",
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/dev/shm"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert build_job(run, config) == job  # pure


def test_cpu_only_run_asks_for_no_gpu_and_uses_its_own_image(config):
    job = build_job(make_run(spec={"resources": {"gpus": 0}, "image": "img:dev"}), config)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in job["spec"]["template"]["spec"]
    assert container["image"] == "img:dev"


def test_secret_value_never_in_the_job(config):
    job = build_job(make_run(), config)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all("value" not in e for e in env if e["name"] == "DATABASE_URL")


def test_a_cache_claim_gives_the_trainer_a_persistent_bounded_download_cache(config):
    from dataclasses import replace

    plain = build_job(make_run(), config)["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in plain["volumes"])
    assert "TRAINER_CACHE_DIR" not in {e["name"] for e in plain["containers"][0]["env"]}

    pod = build_job(make_run(), replace(config, cache_claim="trainer-cache", cache_max_gb=20.0))["spec"][
        "template"
    ]["spec"]
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "trainer-cache"}} in pod["volumes"]
    container = pod["containers"][0]
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["TRAINER_CACHE_DIR"], env["TRAINER_CACHE_MAX_GB"]) == ("/cache", "20.0")
    # The trainer reads them as the operator writes them.
    from trainer.settings import load_settings

    s = load_settings(["--dataset", "gs://wd-datasets/ds"], {"GCS_MODELS_BUCKET": "m"} | env)
    assert str(s.cache_dir) == "/cache" and s.cache_max_bytes == 20 * 10**9


def _shm_bytes(job: dict) -> int:
    from waste_operator.config import quantity

    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    return int(quantity(volumes["dshm"]["emptyDir"]["sizeLimit"]))


def test_the_trainer_learns_the_pods_cpu_request_from_the_downward_api(config):
    env = {
        e["name"]: e
        for e in build_job(make_run(), config)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRAINER_CPU_REQUEST_MILLICORES"]["valueFrom"] == {
        "resourceFieldRef": {"containerName": "trainer", "resource": "requests.cpu", "divisor": "1m"}
    }
    # The value the kubelet puts there ("4" CPUs -> "4000") is what the trainer reads.
    from trainer.resources import parse_cpu_request

    assert parse_cpu_request({"TRAINER_CPU_REQUEST_MILLICORES": "4000"}) == 4.0


def test_shared_memory_grows_with_the_loaders_of_every_gpu_and_stays_within_memory(config):
    GiB = 2**30
    small = build_job(make_run(), config)  # 1 GPU, 4 CPUs, batch 16: the configured floor
    assert _shm_bytes(small) == 8 * GiB
    # 8 GPUs sharing 64 CPUs (8 workers each), batch auto (64 per GPU at 640): 8*8*4*64 images of
    # 640x640x3 bytes, twice over = 40 GB, more than the floor.
    big_spec = {"batchSize": "auto", "resources": {"gpus": 8, "cpu": "64", "memory": "200Gi"}}
    big = build_job(make_run(spec=big_spec), config)
    assert _shm_bytes(big) == 2 * 8 * 8 * 4 * 64 * 640 * 640 * 3 // 2**20 * 2**20
    # Shared memory counts against the memory limit: never more than it.
    capped = build_job(
        make_run(spec={**big_spec, "resources": {**big_spec["resources"], "memory": "32Gi"}}), config
    )
    assert _shm_bytes(capped) == 32 * GiB
    cpu_run = build_job(make_run(spec={"resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"}}), config)
    assert _shm_bytes(cpu_run) == 2 * GiB


def test_the_operators_shm_rules_are_the_trainers():
    from waste_operator import jobs

    from trainer import resources

    assert (jobs.MAX_WORKERS, jobs.AUTO_BATCH_PER_GPU_640) == (
        resources.MAX_WORKERS,
        resources.AUTO_BATCH_PER_GPU_640,
    )
    for imgsz in (320, 640, 1280):
        spec = {"batchSize": "auto", "imgSize": imgsz, "resources": {"gpus": 1, "cpu": "1", "memory": "1Ti"}}
        per_gpu = resources.auto_batch_per_gpu(imgsz)
        needed = 2 * 1 * 1 * jobs.PREFETCH * per_gpu * imgsz * imgsz * 3
        assert (
            jobs.shm_size(spec, jobs.OperatorConfig("i", "m", "i", "d", shm_size="1Mi"))
            == f"{-(-needed // 2**20)}Mi"
        )


def test_a_bad_shm_floor_in_the_operator_config_is_refused_at_start():
    import pytest
    from waste_operator.config import ConfigError, OperatorConfig

    base = {
        "TRAINER_IMAGE": "i",
        "GCS_MODELS_BUCKET": "m",
        "GCS_IMAGES_BUCKET": "i",
        "GCS_DATASETS_BUCKET": "d",
    }
    assert OperatorConfig.from_env(base | {"TRAINER_SHM_SIZE": "512Mi"}).shm_size == "512Mi"
    with pytest.raises(ConfigError, match="TRAINER_SHM_SIZE"):
        OperatorConfig.from_env(base | {"TRAINER_SHM_SIZE": "lots"})

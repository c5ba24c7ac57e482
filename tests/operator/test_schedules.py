"""TrainingSchedules on the real API server with a real PostgreSQL: a fake clock (a file the operator reads
as its schedules' now) drives ticks in seconds; the stand-in trainer finishes the runs."""

from __future__ import annotations

import json
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from waste_operator import GROUP, PLURAL, VERSION
from waste_operator.cron import parse
from waste_operator.schedule import SCHEDULE_LABEL, run_name

from tests.controlplane.util import wait_for
from tests.fixtures.inference_api import create_inference_table, execute_many
from tests.fixtures.services import start_postgres
from tests.operator.harness import ROOT, OperatorProcess, phase_is, wait_run

pytestmark = pytest.mark.controlplane
SCHEDULES = "trainingschedules"
CRON = "0 3 * * *"
# The deployed model (v1) learned from feedback up to this instant.
CUTOFF = datetime(2026, 11, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self, path: Path):
        self.path = path
        self.set(datetime.now(UTC))

    def set(self, now: datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        tmp.replace(self.path)  # the operator never reads half a time


@pytest.fixture
def clock(tmp_path) -> FakeClock:
    return FakeClock(tmp_path / "now")


def feedback_database(dsn: str) -> str:
    """The Inference API's table and a registry whose deployed model v1 has data cutoff CUTOFF."""
    from trainer.db import PostgresDatabase, migrate

    create_inference_table(dsn)
    db = PostgresDatabase(dsn)
    try:
        migrate(db)
        db.execute(
            "INSERT INTO model_versions (number, name, state, run_id, data_cutoff, created_at) "
            "VALUES (1, 'v1', 'registered', 'seed', $1, $1)",
            CUTOFF,
        )
        db.execute("UPDATE latest_model SET version = 1 WHERE id = 1")
    finally:
        db.close()
    return dsn


def add_feedback(
    dsn: str, n: int, *, status: str = "verified", after_cutoff: bool = True, start: int = 0
) -> None:
    base = CUTOFF + (timedelta(days=1) if after_cutoff else -timedelta(days=1))
    rows = [
        (
            f"{status}-{after_cutoff}-{start + i}",
            f"images/{i}.jpg",
            f"labels/{i}.txt",
            status,
            2,
            base + timedelta(seconds=i),
        )
        for i in range(n)
    ]
    execute_many(
        dsn,
        "INSERT INTO inferences (id, image_object, label_object, status, detection_count, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $6)",
        rows,
    )


def create_schedule(api, namespace: str, name: str, spec: dict) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingSchedule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": "argocd-app"}},
        "spec": {"schedule": CRON, "template": {"epochs": 1, "resources": {"gpus": 0}}} | spec,
    }
    return api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, SCHEDULES, body)


def get_schedule(api, namespace: str, name: str) -> dict:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, SCHEDULES, name)


def wait_schedule(api, namespace: str, name: str, predicate, timeout: float = 30, message: str = "") -> dict:
    def check():
        found = get_schedule(api, namespace, name)
        return found if predicate(found.get("status") or {}) else None

    return wait_for(check, timeout=timeout, message=message or f"TrainingSchedule {name}", interval=0.2)


def runs_of(api, namespace: str, schedule: str) -> list[dict]:
    found = api.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=f"{SCHEDULE_LABEL}={schedule}"
    )
    return sorted(found["items"], key=lambda r: r["metadata"]["name"])


def events_of(api, namespace: str, name: str, reason: str) -> list:
    found = api.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e for e in found.items if e.reason == reason]


def ticks(after: datetime, n: int) -> list[datetime]:
    cron, out = parse(CRON), []
    for _ in range(n):
        after = cron.next_after(after)
        out.append(after)
    return out


def start_operator(
    control_plane, namespace, tmp_path, clock: FakeClock, dsn: str | None, **extra
) -> OperatorProcess:
    env = {"WD_OPERATOR_CLOCK_FILE": str(clock.path), "SCHEDULE_RESYNC_SECONDS": "0.3"} | extra
    if dsn:
        env["DATABASE_URL"] = dsn
    return OperatorProcess(control_plane, namespace, tmp_path, extra_env=env).start()


def get_ts(control_plane, namespace: str) -> str:
    return control_plane.kubectl("get", "ts", "-n", namespace).stdout


def test_new_feedback_between_ticks_makes_the_next_tick_fire(
    control_plane, run_namespace, trainingschedule_crd, standin_runner, postgres, api, clock, tmp_path
):
    ns = run_namespace
    dsn = feedback_database(postgres.new_database())
    add_feedback(dsn, 3)
    add_feedback(dsn, 40, after_cutoff=False)  # the deployed model has learned these
    add_feedback(dsn, 10, status="pending")  # not reviewed: not feedback
    add_feedback(dsn, 10, status="rejected")
    operator = start_operator(control_plane, ns, tmp_path, clock, dsn)
    try:
        create_schedule(api, ns, "nightly", {"minNewSamples": 5})
        first, second = ticks(datetime.now(UTC), 2)
        status = wait_schedule(api, ns, "nightly", lambda s: s.get("reason") == "Waiting")["status"]
        assert status["pending"] == "3/5" and status["nextScheduleTime"] == first.strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )

        clock.set(first + timedelta(seconds=1))
        status = wait_schedule(api, ns, "nightly", lambda s: s.get("reason") == "NotEnoughSamples")["status"]
        assert status["message"].startswith(
            "3 of 5 new samples since the deployed model's data cutoff 2026-11-01"
        )
        assert runs_of(api, ns, "nightly") == []

        add_feedback(dsn, 2, start=100)
        clock.set(first + timedelta(hours=6))  # between ticks: the count moves, nothing fires
        wait_schedule(api, ns, "nightly", lambda s: s.get("pending") == "5/5", message="the count of 5")
        assert runs_of(api, ns, "nightly") == []

        clock.set(second + timedelta(seconds=1))
        name = run_name("nightly", second)
        status = wait_schedule(api, ns, "nightly", lambda s: s.get("reason") == "Scheduled")["status"]
        assert status["lastScheduleTime"] == second.strftime("%Y-%m-%dT%H:%M:%SZ")
        (run,) = runs_of(api, ns, "nightly")
        assert run["metadata"]["name"] == name and run["spec"]["epochs"] == 1
        (owner,) = run["metadata"]["ownerReferences"]
        assert (
            owner["kind"] == "TrainingSchedule"
            and owner["uid"] == get_schedule(api, ns, "nightly")["metadata"]["uid"]
        )
        assert "app.kubernetes.io/instance" not in run["metadata"]["labels"]
        # No kopf timer, no finalizer: a schedule and its runs stay deletable while the operator is down.
        assert not get_schedule(api, ns, "nightly")["metadata"].get("finalizers")
        assert not run["metadata"].get("finalizers")
        wait_run(api.custom, ns, name, phase_is("Succeeded"), 60)
        wait_schedule(api, ns, "nightly", lambda s: (s.get("lastRun") or {}).get("phase") == "Succeeded")
        assert len(events_of(api, ns, "nightly", "NotEnoughSamples")) == 1
        assert len(events_of(api, ns, "nightly", "Scheduled")) == 1
        print("--- kubectl get ts ---\n" + get_ts(control_plane, ns))
        print(control_plane.kubectl("get", "ts", "-o", "wide", "-n", ns).stdout)
        print(control_plane.kubectl("get", "tr", "-n", ns).stdout)
    finally:
        operator.stop()
        print(operator.tail(40))


def test_forbid_holds_a_tick_while_a_run_is_active_and_history_limits_prune(
    control_plane, run_namespace, trainingschedule_crd, standin_runner, api, clock, tmp_path
):
    ns = run_namespace
    operator = start_operator(control_plane, ns, tmp_path, clock, None)
    try:
        # Clock only (no database); each run starts suspended, so it stays active until the test resumes it.
        create_schedule(
            api,
            ns,
            "hold",
            {
                "minNewSamples": 0,
                "successfulRunsHistoryLimit": 1,
                "template": {"epochs": 1, "resources": {"gpus": 0}, "suspend": True},
            },
        )
        first, second, third = ticks(datetime.now(UTC), 3)
        wait_schedule(api, ns, "hold", lambda s: s.get("reason") == "Waiting")
        clock.set(first + timedelta(seconds=1))
        one = run_name("hold", first)
        wait_schedule(api, ns, "hold", lambda s: s.get("lastScheduleTime"))
        wait_run(api.custom, ns, one, phase_is("Suspended"), 30)

        clock.set(second + timedelta(seconds=1))
        status = wait_schedule(api, ns, "hold", lambda s: s.get("reason") == "RunActive")["status"]
        assert f"TrainingRun {one} is Suspended" in status["message"]
        assert [r["metadata"]["name"] for r in runs_of(api, ns, "hold")] == [one]

        resume(api, ns, one)
        wait_run(api.custom, ns, one, phase_is("Succeeded"), 60)
        two = run_name("hold", second)  # the held tick runs once the active run is done
        wait_for(lambda: len(runs_of(api, ns, "hold")) == 2, 30, "the held tick's run")
        assert len(events_of(api, ns, "hold", "RunActive")) == 1

        resume(api, ns, two)
        wait_run(api.custom, ns, two, phase_is("Succeeded"), 60)
        # successfulRunsHistoryLimit 1: the older succeeded run is deleted.
        wait_for(lambda: [r["metadata"]["name"] for r in runs_of(api, ns, "hold")] == [two], 30, "pruning")
        clock.set(third + timedelta(seconds=1))
        wait_for(lambda: len(runs_of(api, ns, "hold")) == 2, 30, "the third tick's run")
    finally:
        operator.stop()
        print(operator.tail(40))


def resume(api, namespace: str, name: str) -> None:
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"suspend": False}}
    )


def test_an_operator_crash_between_creating_a_run_and_recording_it_creates_exactly_one_run(
    control_plane, run_namespace, trainingschedule_crd, standin_runner, api, clock, tmp_path
):
    ns = run_namespace
    crashing = start_operator(
        control_plane, ns, tmp_path, clock, None, WD_OPERATOR_CRASH_AT="after-schedule-run-create"
    )
    create_schedule(api, ns, "crashy", {"minNewSamples": 0})
    (tick,) = ticks(datetime.now(UTC), 1)
    wait_schedule(api, ns, "crashy", lambda s: s.get("reason") == "Waiting")
    clock.set(tick + timedelta(seconds=1))
    assert crashing.proc.wait(30) == 86, crashing.tail()
    assert len(runs_of(api, ns, "crashy")) == 1
    assert "lastTickTime" not in (get_schedule(api, ns, "crashy").get("status") or {})

    healthy = start_operator(control_plane, ns, tmp_path, clock, None)
    try:
        at = tick.strftime("%Y-%m-%dT%H:%M:%SZ")
        wait_schedule(
            api, ns, "crashy", lambda s: s.get("lastScheduleTime") == at and s.get("reason") == "Scheduled"
        )
        clock.set(tick + timedelta(minutes=30))  # later passes, same tick: still one run
        wait_run(api.custom, ns, run_name("crashy", tick), phase_is("Succeeded"), 60)
        # Applying the same schedule again (as ArgoCD does on every sync) changes nothing either.
        same = get_schedule(api, ns, "crashy")
        manifest = {k: same[k] for k in ("apiVersion", "kind", "spec")} | {
            "metadata": {"name": "crashy", "namespace": ns}
        }
        control_plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(manifest)
        )
        assert get_schedule(api, ns, "crashy")["metadata"]["generation"] == same["metadata"]["generation"]
        time.sleep(2)  # several schedule passes
        assert [r["metadata"]["name"] for r in runs_of(api, ns, "crashy")] == [run_name("crashy", tick)]
    finally:
        healthy.stop()
        print(healthy.tail(40))


def test_a_database_that_is_down_creates_no_run_and_the_held_tick_runs_when_it_is_back(
    control_plane, run_namespace, trainingschedule_crd, standin_runner, api, clock, tmp_path
):
    ns = run_namespace
    server = start_postgres(durable=True)
    try:
        dsn = feedback_database(server.new_database())
        add_feedback(dsn, 2)
        operator = start_operator(control_plane, ns, tmp_path, clock, dsn)
        try:
            create_schedule(api, ns, "flaky", {"minNewSamples": 1})
            (tick,) = ticks(datetime.now(UTC), 1)
            wait_schedule(api, ns, "flaky", lambda s: s.get("pending") == "1/1")
            server.stop()
            clock.set(tick + timedelta(seconds=1))
            status = wait_schedule(api, ns, "flaky", lambda s: s.get("reason") == "DatabaseUnavailable")[
                "status"
            ]
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "False" and ready["reason"] == "DatabaseUnavailable"
            assert status["pending"] == "?/1"
            clock.set(tick + timedelta(seconds=30))  # more passes while it is down
            wait_for(lambda: operator.log().count("DatabaseUnavailable: cannot count") >= 3, 30, "passes")
            assert runs_of(api, ns, "flaky") == [] and operator.alive()
            assert len(events_of(api, ns, "flaky", "DatabaseUnavailable")) == 1

            server.start()
            wait_for(lambda: len(runs_of(api, ns, "flaky")) == 1, 60, "the held tick's run")
            status = wait_schedule(api, ns, "flaky", lambda s: s.get("reason") == "Scheduled")["status"]
            assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
        finally:
            operator.stop(signal.SIGTERM)
            print(operator.tail(40))
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def test_a_schedule_without_a_database_url_says_so(
    control_plane, run_namespace, trainingschedule_crd, api, clock, tmp_path
):
    ns = run_namespace
    operator = start_operator(control_plane, ns, tmp_path, clock, None)
    try:
        create_schedule(api, ns, "nodb", {"minNewSamples": 10})
        status = wait_schedule(api, ns, "nodb", lambda s: s.get("conditions"))["status"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DatabaseNotConfigured")
        assert "DATABASE_URL" in ready["message"]
    finally:
        operator.stop()


@pytest.mark.parametrize(("spec", "words"), [
    ({"schedule": 5}, "spec.schedule"),
    ({"concurrencyPolicy": "Allow"}, "spec.concurrencyPolicy"),
    ({"maxInterval": "1 week"}, "spec.maxInterval"),
    ({"minNewSamples": 0, "maxInterval": "7d"}, "maxInterval retrains when anything new arrived"),
    ({"template": {"epochs": 0}}, "spec.template.epochs"),
    ({"template": {"learningRate": 0.01}}, "learningRate needs a named optimizer"),
    ({"template": {"source": {"dataset": {"uri": "gs://b/d"}}}}, "runs on the clock only"),
])  # fmt: skip
def test_bad_schedules_are_refused_by_the_api_server(
    control_plane, run_namespace, trainingschedule_crd, spec, words
):
    import yaml

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingSchedule",
        "metadata": {"name": "bad", "namespace": run_namespace},
        "spec": {"schedule": CRON, "template": {}} | spec,
    }
    result = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0 and words in result.stderr, result.stderr


def test_the_template_can_be_edited_unlike_a_runs_spec(
    control_plane, run_namespace, trainingschedule_crd, api
):
    create_schedule(api, run_namespace, "editable", {"minNewSamples": 0})
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, run_namespace, SCHEDULES, "editable", {"spec": {"template": {"epochs": 7}}}
    )
    assert get_schedule(api, run_namespace, "editable")["spec"]["template"]["epochs"] == 7


def test_kubectl_get_ts_shows_the_columns(control_plane, run_namespace, trainingschedule_crd, api):
    create_schedule(api, run_namespace, "cols", {"minNewSamples": 0})
    header = get_ts(control_plane, run_namespace).splitlines()[0].split()
    assert header == ["NAME", "SCHEDULE", "SUSPENDED", "PENDING", "LAST", "RUN", "NEXT", "AGE"]


def test_the_example_schedule_is_valid(control_plane, trainingschedule_crd):
    manifests = ROOT / "manifests"
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(manifests / "namespace.yaml")
    )
    control_plane.kubectl(
        "apply", "--dry-run=server", "-f", str(manifests / "examples" / "trainingschedule.yaml")
    )

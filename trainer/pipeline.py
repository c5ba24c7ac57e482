"""The training job, step by step: select, download, build, train, evaluate, publish, register."""

from __future__ import annotations

import functools
import logging
import platform
import shutil
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from trainer import basemodel, chart, sweep
from trainer.blobstore import BlobStore, GCSBlobStore, LocalBlobStore, NotFound, parse_gs_uri
from trainer.dataset import DatasetResult, write_dataset
from trainer.db import Database, connect, migrate
from trainer.errors import EmptySelectionError, ModelUnavailableError, TrainerError
from trainer.fetch import FetchResult, ObjectCache, TrimResult
from trainer.gate import decide_promotion
from trainer.preflight import Preflight
from trainer.progress import StatusReporter
from trainer.publish import CHECKPOINTS, LATEST_MODEL, checkpoint_prefix, move_latest, upload_version
from trainer.reconcile import read_label_caches, reconcile
from trainer.registry import Registry, SampleLocation, version_name
from trainer.report import RunReport, logfmt
from trainer.selection import Record, fill, sample_replay, select
from trainer.settings import Settings
from trainer.sources import (
    dataset_records,
    dataset_records_by_id,
    inference_records,
    inference_records_by_id,
)

log = logging.getLogger("trainer")
# Exit codes the Job's podFailurePolicy fails at once (docs/CONTRACTS.md): no retry follows them.
PERMANENT_EXIT_CODES = (2, 3, 6)


class Job:
    def __init__(self, settings: Settings):
        self.s = settings
        self.run_id = settings.run_key or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.report = RunReport(
            run_id=self.run_id, mode="inferences" if settings.from_inferences else "dataset"
        )
        self.reporter = StatusReporter(settings.run_name, settings.run_namespace, settings.run_uid)
        safe = checkpoint_prefix(self.run_id).split("/")[1]
        self.work = (
            settings.work_dir / "runs" / safe
        )  # deterministic: a retried Job resumes in the same place
        self.db: Database | None = None
        self.warm_up = None  # trainer.yolo.WarmUp, started once there is something to train on
        self.registry: Registry | None = None
        self.models: BlobStore | None = None
        self.reserved: int | None = None
        self.dataset_uri: str | None = None  # dataset mode: the run's own dataset, as samples record it
        self.locations: dict[str, SampleLocation] = {}  # dataset mode: where each written sample lives

    # Stores --------------------------------------------------------------------------------------------
    def _store(self, bucket: str | None, local_name: str) -> BlobStore:
        return GCSBlobStore(bucket) if bucket else LocalBlobStore(self.s.local_dir / local_name)

    def run(self) -> RunReport:
        try:
            self._run()
            self.report.status = "Succeeded"
        except TrainerError as exc:
            self.report.fail(exc.reason, str(exc))
            self._record_failure()
            if exc.exit_code in PERMANENT_EXIT_CODES:
                self._drop_checkpoint()  # the Job fails at once on these: no retry will resume
            raise
        except Exception as exc:
            self.report.fail("InternalError", f"{type(exc).__name__}: {exc}")
            self._record_failure()
            raise
        finally:
            t = self.report.training
            if self.report.status == "Succeeded":
                self.reporter.progress("Done", t.get("epochs_completed", 0), t.get("epochs", 0), force=True)
            else:
                self.reporter.stopped()  # PROGRESS shows where it stopped, never "Done"
            self.reporter.result(self.report.compact())
            self.report.write(self.s.report_path, self.s.termination_log)
            if self.db is not None:
                self.db.close()
            if self.warm_up is not None:
                self.warm_up.wait(60)  # a run that failed early: let its imports finish before exit
        return self.report

    def _record_failure(self) -> None:
        try:
            if self.registry is not None:
                if self.reserved is not None:
                    self.registry.abandon_version(self.reserved)
                self.registry.fail_run(
                    self.run_id, self.report.reason, self.report.message, self.report.as_dict()
                )
        except Exception as exc:  # noqa: BLE001 - the original failure is what the user needs to see
            log.warning(logfmt(event="failure_not_recorded", run=self.run_id, error=str(exc)[:200]))

    def _drop_checkpoint(self) -> None:
        if not self.s.run_key or self.models is None:
            return
        try:
            self.models.delete(checkpoint_prefix(self.run_id) + "last.pt")
        except Exception as exc:  # noqa: BLE001 - the start sweep of a later run removes it
            log.warning(logfmt(event="checkpoint_not_removed", run=self.run_id, error=str(exc)[:200]))

    def _run(self) -> None:
        s, r = self.s, self.report
        self.reporter.progress("Selecting", force=True)
        with r.step("registry") as f:
            self.db = connect(s.database_url, s.local_dir)
            f["migrations_applied"] = len(migrate(self.db))
            self.registry = Registry(self.db)
            earlier = self.registry.start_run(self.run_id, r.mode, s.run_namespace, s.run_name)
        if earlier:
            # A retried Job whose run already succeeded: nothing to redo, no GPU hour spent twice.
            log.info(logfmt(event="already_succeeded", run=self.run_id, name=s.run_label))
            for key in ("selection", "data", "training", "metrics", "champion", "promotion", "model"):
                setattr(r, key, earlier.get(key) or getattr(r, key))
            return
        self.models = self._store(s.models_bucket, "models-bucket")
        self._preflight()
        with r.step("tidy") as f:
            f.update(self._tidy())
        records, source, cutoff, replayed = self._select()
        dataset = self._build(records, source, replayed)
        base_path, base_version = self._base_model()
        outcome = self._train(base_path)
        self._reconcile(dataset)
        challenger = outcome.metrics
        champion = self._evaluate_champion(base_path, base_version, dataset, outcome.sizing)
        decision = decide_promotion(
            s.promotion,
            champion,
            challenger,
            map50_tolerance=s.map50_tolerance,
            class_ap_drop=s.class_ap_drop,
        )
        self._publish(outcome.best, base_version, challenger, champion, decision, cutoff, dataset, replayed)
        log.info(r.promotion["summary"])  # what was decided and why, in one line a person can read

    def _tidy(self) -> dict[str, int]:
        """Marks the registry rows of runs that ended without their trainer, and removes checkpoints no run
        will resume (trainer/sweep.py has the rules). Never fails the run."""
        counts = {"runs_ended": 0, "checkpoints_removed": 0}
        current = checkpoint_prefix(self.run_id)[len(CHECKPOINTS) : -1] if self.s.run_key else None
        try:
            now = datetime.now(UTC)
            endings = sweep.ended_runs(
                self.registry.running_runs(),
                self.reporter.list_runs(),
                self.s.run_namespace,
                now,
                current=self.run_id,
            )
            ended = [e.run_id for e in endings if self.registry.end_run(e.run_id, e.reason, e.message)]
            counts["runs_ended"] = len(ended)
            listed = self.models.list(CHECKPOINTS)
            folders = sweep.checkpoint_folders((b.name, b.updated) for b in listed)
            stale = sweep.stale_checkpoints(
                folders, self.registry.runs_by_id(folders), now, current=current, ended=ended
            )
            for folder in stale:
                for blob in listed:
                    if blob.name.startswith(f"{CHECKPOINTS}{folder}/"):
                        self.models.delete(blob.name)
            counts["checkpoints_removed"] = len(stale)
        except Exception as exc:  # noqa: BLE001 - tidying is for the next runs, never a reason to fail this one
            log.warning(logfmt(event="tidy_failed", error=str(exc)[:200]))
        return counts

    # Steps ---------------------------------------------------------------------------------------------
    def _preflight(self) -> None:
        """Every resource the run needs, before any download or GPU time (trainer/preflight.py)."""
        s = self.s
        with self.report.step("preflight") as f:
            check = Preflight(
                settings=s,
                db=self.db,
                models=self.models,
                images=self._store(s.images_bucket, "images-bucket") if s.from_inferences else None,
            )
            try:
                check.run()
            finally:
                self.report.preflight = dict(check.timings)
                f.update(checks=",".join(check.timings))

    def _reconcile(self, ds: DatasetResult) -> None:
        """Ultralytics' own verdicts from its label cache: what it dropped is counted, and not registered."""
        r = self.report
        with r.step("reconcile") as f:
            rec = reconcile(ds.written, read_label_caches(ds.root))
            for record_id, split, why in rec.dropped:
                ds.splits.pop(record_id, None)
                ds.classes.pop(record_id, None)
                ds.counts[split] -= 1
                r.data[split] = ds.counts[split]
                r.data["skipped"]["ultralytics_rejected"] = (
                    r.data["skipped"].get("ultralytics_rejected", 0) + 1
                )
                if len(r.data["skipped_examples"]) < 40:
                    r.data["skipped_examples"].append(f"{record_id}: ultralytics_rejected: {why}"[:300])
            r.data["ultralytics_check"] = rec.summary()
            f.update(**rec.summary())
            if rec.dropped:
                log.warning(logfmt(event="ultralytics_dropped", run=self.run_id, images=len(rec.dropped)))

    def _select(self) -> tuple[list[Record], BlobStore, datetime | None, set[str]]:
        s, r = self.s, self.report
        with r.step("select") as f:
            if s.from_inferences:
                since = None if s.all_time else self.registry.last_cutoff()
                sel = select(
                    inference_records(self.db, since),
                    only_verified=s.only_verified,
                    min_detections=s.min_detections,
                )
                source = self._store(s.images_bucket, "images-bucket")
                new_ids = {x.id for x in sel.selected}
                replay: list[Record] = []
                want_replay = round(s.replay_ratio * len(sel.selected)) if since is not None else 0
                if want_replay:
                    # The whole pool in the stratified order, filled up to the count asked for: a record
                    # rejected since it was trained on is replaced by the next one, not lost.
                    pool = self.registry.replay_pool()
                    order = sample_replay(pool, len(pool), s.seed, exclude=new_ids)
                    replay = [
                        replace(x, split_hint="train")  # earlier training images stay training images
                        for x in fill(order, want_replay, lambda ids: inference_records_by_id(self.db, ids))
                    ]
                history: list[Record] = []
                want_history = s.history_val if since is not None and sel.selected else 0
                if want_history:
                    # The validation images of earlier runs stay validation images: champion and challenger
                    # are then also compared on the classes the new data lacks, so forgetting shows.
                    pool = self.registry.validation_pool()
                    taken = new_ids | {x.id for x in replay}
                    order = sample_replay(pool, len(pool), s.seed, exclude=taken)
                    history = [
                        replace(x, split_hint="val")
                        for x in fill(order, want_history, lambda ids: inference_records_by_id(self.db, ids))
                    ]
                r.selection = {
                    "since": since.isoformat() if since else None,
                    **sel.counts,
                    "selected": len(sel.selected) + len(replay) + len(history),
                    "new": len(sel.selected),
                    "replay_requested": want_replay,
                    "replayed": len(replay),
                    "history_val_requested": want_history,
                    "history_val": len(history),
                    "cutoff": sel.cutoff.isoformat() if sel.cutoff else None,
                }
                records, cutoff = sel.selected + replay + history, sel.cutoff
                # Earlier samples, for training (replay) or for validation only (history).
                replayed = {x.id for x in replay + history}
                if not sel.selected:
                    where = f"since {since.isoformat()}" if since else "in the inferences table"
                    kind = "verified or corrected " if s.only_verified else ""
                    raise EmptySelectionError(
                        f"no new {kind}inferences {where} with at least "
                        f"{s.min_detections} detection(s): nothing to train on"
                    )
            else:
                uri = s.dataset or ""
                self.dataset_uri = dataset_uri(uri)
                source, prefix = open_dataset(self.dataset_uri)
                sel = select(
                    dataset_records(source, prefix, self.dataset_uri), only_verified=False, min_detections=0
                )
                if not sel.selected:
                    raise EmptySelectionError(
                        f"dataset {uri} has no image with a label file "
                        "(expected images/... and labels/... folders)"
                    )
                replay, history = self._dataset_history(sel.selected) if s.incremental else ([], [])
                records, cutoff = sel.selected + replay + history, None
                replayed = {x.id for x in replay + history}
                r.selection = {
                    **sel.counts,
                    "new": len(sel.selected),
                    "replayed": len(replay),
                    "history_val": len(history),
                    "source": uri,
                }
            f.update(
                selected=len(records),
                new=r.selection["new"],
                replayed=r.selection["replayed"],
                replay_requested=r.selection.get("replay_requested", 0),
                history_val=r.selection.get("history_val", 0),
            )
        return records, source, cutoff, replayed

    def _dataset_history(self, new: list[Record]) -> tuple[list[Record], list[Record]]:
        """--incremental dataset on top of a deployed model: earlier datasets' training samples to replay and
        their validation samples to validate on, as incremental runs on inferences do. A sample of the new
        dataset is never also replayed. (A complete dataset, the default, replays nothing: an earlier
        version of the same photos would train twice, or validate a model that trained on them.)"""
        s = self.s
        if self.registry.latest() is None:
            return [], []
        taken = {x.id for x in new}
        replay: list[Record] = []
        if s.replay_ratio > 0:
            pool = self.registry.dataset_samples("train")
            want = round(s.replay_ratio * len(new))
            ids = sample_replay([(i, x.classes) for i, x in pool.items()], want, s.seed, exclude=taken)
            replay = dataset_records_by_id(pool, ids, "train")
        history: list[Record] = []
        if s.history_val > 0:
            pool = self.registry.dataset_samples("val")
            taken |= {x.id for x in replay}
            ids = sample_replay(
                [(i, x.classes) for i, x in pool.items()], s.history_val, s.seed, exclude=taken
            )
            history = dataset_records_by_id(pool, ids, "val")
        return replay, history

    def _fetch(
        self, records: list[Record], source: BlobStore
    ) -> tuple[list[Record], FetchResult, TrimResult | None]:
        """Downloads every record's objects into the cache: the run's own source first, then each earlier
        dataset that replayed samples come from. Returns the records keyed for write_dataset (an earlier
        dataset's object names are prefixed with its URI, so two datasets' equal names never meet), the
        merged result, and what the cache's size bound evicted (None: unbounded)."""
        s = self.s
        groups: dict[str | None, list[Record]] = {}
        for x in records:
            groups.setdefault(None if x.source in (None, self.dataset_uri) else x.source, []).append(x)
        merged, keyed = FetchResult(), []
        cache = ObjectCache(s.cache_dir / "objects", source, track_use=bool(s.cache_max_bytes))
        for where, group in groups.items():
            names = [x.image_object for x in group] + [x.label_object for x in group if x.label_object]
            if where is None:
                got, key = cache.fetch(names, concurrency=s.download_concurrency), str
            else:
                key = functools.partial(_keyed, where)
                try:
                    store, _ = open_dataset(where)
                except EmptySelectionError as exc:  # an earlier dataset was removed: its samples are missing
                    got = FetchResult(missing=dict.fromkeys(names, str(exc)))
                else:
                    other = ObjectCache(s.cache_dir / "objects", store, track_use=bool(s.cache_max_bytes))
                    got = other.fetch(names, concurrency=s.download_concurrency)
                group = [
                    replace(
                        x,
                        image_object=key(x.image_object),
                        label_object=key(x.label_object) if x.label_object else None,
                    )
                    for x in group
                ]
            keyed += group
            merged.paths.update({key(n): p for n, p in got.paths.items()})
            merged.missing.update({key(n): why for n, why in got.missing.items()})
            merged.downloaded += got.downloaded
            merged.cached += got.cached
            merged.bytes_downloaded += got.bytes_downloaded
        trimmed = cache.trim(s.cache_max_bytes, keep=merged.paths.values()) if s.cache_max_bytes else None
        order = {x.id: i for i, x in enumerate(records)}
        return sorted(keyed, key=lambda x: order[x.id]), merged, trimmed

    def _build(self, records: list[Record], source: BlobStore, replayed: set[str]) -> DatasetResult:
        s, r = self.s, self.report
        from trainer import yolo

        # Torch and Ultralytics import (and the GPUs are counted) while the images download.
        self.warm_up = yolo.WarmUp(s.work_dir / "ultralytics", s.device)
        self.reporter.progress("Downloading", force=True)
        with r.step("download") as f:
            keyed, fetched, trimmed = self._fetch(records, source)
            evicted = trimmed.removed if trimmed else 0
            if trimmed:
                f.update(cache_evicted=evicted, cache_bytes=trimmed.bytes_kept)
            f.update(
                objects=len(fetched.paths) + len(fetched.missing),
                downloaded=fetched.downloaded,
                cached=fetched.cached,
                missing=len(fetched.missing),
                bytes=fetched.bytes_downloaded,
            )
        self.reporter.progress("BuildingDataset", force=True)
        with r.step("dataset") as f:
            ds = write_dataset(
                self.work / "dataset",
                keyed,
                fetched.paths,
                s.train_split,
                fetched.missing,
                allow_background=s.min_detections == 0,
                background_share=s.background_share,
            )
            self.locations = {
                x.id: SampleLocation(x.source, x.image_object, x.label_object)
                for x in records
                if x.source and x.id in ds.splits
            }
            r.data = {
                "train": ds.counts["train"],
                "val": ds.counts["val"],
                "skipped": ds.skipped,
                "skipped_examples": ds.skipped_examples,
                "backgrounds": ds.backgrounds,
                "altered": ds.altered,
                "downloaded": fetched.downloaded,
                "cached": fetched.cached,
                "bytes_downloaded": fetched.bytes_downloaded,
                "cache_evicted": evicted,
                "instances": ds.instances,
                "replayed_by_class": _class_counts(ds, {i for i in replayed if ds.splits.get(i) == "train"}),
                "history_val_by_class": _class_counts(ds, {i for i in replayed if ds.splits.get(i) == "val"}),
            }
            f.update(train=ds.counts["train"], val=ds.counts["val"], skipped=sum(ds.skipped.values()))
        if not ds.counts["train"] or not ds.counts["val"]:
            raise EmptySelectionError(
                f"no usable samples: {ds.counts['train']} for training and {ds.counts['val']} for validation "
                f"after skipping {ds.skipped or 'none'}; at least one of each is needed"
            )
        return ds

    def _base_model(self) -> tuple[Path, int | None]:
        s = self.s
        with self.report.step("base_model") as f:
            base_dir = self.work / "base"
            base_dir.mkdir(parents=True, exist_ok=True)
            latest = self.registry.latest()
            if self.models.stat(LATEST_MODEL) is not None:
                path = base_dir / "latest.pt"
                self.models.download(LATEST_MODEL, path)
                f.update(base=self.models.uri(LATEST_MODEL), version=version_name(latest) if latest else None)
                return path, latest
            text = s.base_model
            if basemodel.is_architecture(text):
                f.update(base=text)
                return Path(text), None
            if text.startswith("gs://"):
                bucket, name = parse_gs_uri(text)
                path = base_dir / Path(name).name
                try:
                    GCSBlobStore(bucket).download(name, path)
                except NotFound:
                    raise ModelUnavailableError(
                        f"base model {text} does not exist (spec.baseModel / --base-model): upload your "
                        "weights there, or name another object"
                    ) from None
                f.update(base=text)
                return path, None
            for candidate in basemodel.weight_candidates(text, s.weights_dir, s.local_dir):
                if candidate.is_file():
                    f.update(base=str(candidate.absolute()))
                    return candidate.absolute(), None
            raise ModelUnavailableError(
                basemodel.missing_message(
                    text,
                    s.weights_dir,
                    s.local_dir,
                    self.models.uri(LATEST_MODEL),
                    in_cluster=bool(s.run_key),
                )
            )

    def _train(self, base: Path):
        from trainer import yolo

        s, r = self.s, self.report
        with r.step("warm_up"):  # what is left of the imports started with the download
            device = self.warm_up.device()
        ckpt = checkpoint_prefix(self.run_id) + "last.pt"
        resume_from = self.models.stat(ckpt) if s.run_key else None
        r.training = {"epochs": s.epochs, "device": device, "resumed_from_epoch": None}
        if resume_from is not None:
            last = self.work / "train" / "weights" / "last.pt"
            last.parent.mkdir(parents=True, exist_ok=True)
            self.models.download(ckpt, last)
            model = yolo.load_model(last)
            r.training["resumed_from_epoch"] = _checkpoint_epoch(last)
            self.reporter.resumed_from_epoch = r.training["resumed_from_epoch"]
        else:
            model = yolo.load_model(base)
        from trainer.hooks import HookConfig

        # Progress and checkpoint uploads happen in the training process (rank 0 when several GPUs train).
        hooks = HookConfig(
            outcome_path=str(self.work / "train-outcome.json"),
            run_name=s.run_name,
            run_namespace=s.run_namespace,
            models_bucket=s.models_bucket,
            local_dir=str(s.local_dir),
            checkpoint_object=ckpt if s.run_key else None,
            checkpoint_every=s.checkpoint_every,
            heartbeat_run_id=self.run_id if s.run_key else None,
        )
        self.reporter.progress("Training", 0, s.epochs, force=True)
        with r.step("train", device=device, epochs=s.epochs) as f:
            outcome = yolo.train(
                model,
                data_yaml=self.work / "dataset" / "data.yaml",
                project=self.work,
                settings=s,
                device=device,
                resume=resume_from is not None,
                hooks=hooks,
            )
            r.training.update(
                epochs_completed=outcome.epochs_completed,
                early_stopped=outcome.early_stopped,
                **outcome.sizing,
            )
            f.update(
                epochs_completed=outcome.epochs_completed,
                early_stopped=outcome.early_stopped,
                batch=outcome.sizing["batch"],
                workers=outcome.sizing["workers_per_process"],
                processes=outcome.sizing["processes"],
            )
        r.metrics = outcome.metrics
        return outcome

    def _evaluate_champion(
        self, base: Path, base_version: int | None, ds: DatasetResult, sizing: dict
    ) -> dict | None:
        from trainer import champion, yolo

        if base_version is None or not base.is_file():
            return None
        self.reporter.progress("Evaluating", force=True)
        # The challenger's own validation batch and workers (per GPU process), so both are measured alike.
        batch = max(1, sizing["batch"] // sizing["processes"]) * 2
        with self.report.step("evaluate_champion", version=version_name(base_version)) as f:
            import ultralytics

            key = champion.evaluation_key(
                base, champion.validation_digest(ds.root), self.s.img_size, batch, ultralytics.__version__
            )
            metrics = champion.load(self.models, base_version, key)
            f.update(cached=metrics is not None)
            if metrics is None:
                metrics = yolo.evaluate(
                    base,
                    data_yaml=ds.data_yaml,
                    project=self.work,
                    settings=self.s,
                    device=yolo.resolve_device(self.s.device),
                    name="champion",
                    batch=batch,
                    workers=sizing["workers_per_process"],
                )
                champion.save(self.models, base_version, key, metrics)
            f.update(map50=metrics["map50"])
            cached = f["cached"]
        self.report.champion = {"version": version_name(base_version), "cached": cached, **metrics}
        return metrics

    def _publish(
        self, weights: Path, base_version, challenger, champion, decision, cutoff, ds, replayed
    ) -> None:
        s, r, reg = self.s, self.report, self.registry
        self.reporter.progress("Publishing", force=True)
        with r.step("publish") as f:
            self.reserved = number = reg.reserve_version(self.run_id, base_version)
            metadata = {
                "version": version_name(number),
                "number": number,
                "run_id": self.run_id,
                "run": s.run_label,
                "base_version": version_name(base_version) if base_version else None,
                "base_model": s.base_model if base_version is None else "models/latest",
                "created_at": datetime.now(UTC).isoformat(),
                "metrics": challenger,
                "champion": r.champion,
                "promotion_decision": {"promote": decision.promote, "reason": decision.reason},
                "parameters": s.effective_parameters(),
                "selection": r.selection,
                "data": {k: v for k, v in r.data.items() if k != "skipped_examples"},
                "data_cutoff": cutoff.isoformat() if cutoff else None,
                "software": _software(),
            }
            model_uri, metadata_uri = upload_version(self.models, number, weights, metadata)
            r.model = {
                "version": version_name(number),
                "number": number,
                "uri": model_uri,
                "metadata_uri": metadata_uri,
                "base_version": version_name(base_version) if base_version else None,
            }
            f.update(version=version_name(number), uri=model_uri)
        self.reporter.progress("Registering", force=True)
        with r.step("register") as f:
            samples = [(i, split, i in replayed, ds.classes.get(i, [])) for i, split in ds.splits.items()]
            reg.register(
                number=number,
                run_id=self.run_id,
                model_uri=model_uri,
                metadata_uri=metadata_uri,
                metrics=challenger,
                per_class=challenger.get("per_class", {}),
                confusion=challenger.get("confusion"),
                params=s.effective_parameters(),
                data={**r.selection, **{k: v for k, v in r.data.items() if k != "skipped_examples"}},
                data_cutoff=cutoff,
                report=r.as_dict(),
                samples=samples,
                locations=self.locations,
            )
            self.reserved = None
            promoted, current = False, reg.latest()
            reason = decision.reason
            if decision.promote:
                expected = current if s.promotion == "force" else base_version
                promoted, current = reg.promote(
                    number,
                    expected_current=expected,
                    run_id=self.run_id,
                    actor=s.run_label or "cli",
                    reason=decision.reason,
                    move_objects=lambda: move_latest(self.models, number, previous=expected),
                )
                if not promoted:
                    reason = (
                        f"latest moved to {version_name(current) if current else 'nothing'} during this "
                        f"run (compared against {version_name(base_version) if base_version else 'none'})"
                    )
            r.promotion = {
                "promoted": promoted,
                "reason": reason,
                "mode": s.promotion,
                "latest": version_name(number) if promoted else (version_name(current) if current else None),
                "outcome": "promoted"
                if promoted
                else (
                    "superseded" if decision.promote else ("skipped" if s.promotion == "skip" else "refused")
                ),
            }
            r.promotion["summary"] = r.decision_line()
            reg.update_run_report(self.run_id, r.as_dict())
            f.update(version=version_name(number), promoted=promoted)
        # The chart renders and uploads while the checkpoint and the training folder are removed.
        drawing = threading.Thread(target=self._chart, args=(reg.versions(), number), name="chart")
        drawing.start()
        if s.run_key:
            self.models.delete(checkpoint_prefix(self.run_id) + "last.pt")
        shutil.rmtree(self.work / "train", ignore_errors=True)
        with r.step("chart"):  # what is left of it
            drawing.join()

    def _chart(self, versions, number: int) -> None:
        try:
            png = chart.render_per_class_chart(versions, self.work / "chart.png")
            self.models.upload_file(png, f"models/v{number}/map50_per_class.png")
        except Exception as exc:  # noqa: BLE001 - a chart is a convenience, never a reason to fail the run
            log.warning(logfmt(event="chart_failed", error=str(exc)[:200]))


def dataset_uri(text: str) -> str:
    """The URI a dataset's samples are recorded under: gs://bucket/prefix, or the folder's absolute path."""
    if text.startswith("gs://"):
        bucket, prefix = parse_gs_uri(text)
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    return str(Path(text).absolute())


def open_dataset(uri: str) -> tuple[BlobStore, str]:
    """(store, prefix) of a dataset URI as dataset_uri() writes it; a folder must exist (never created)."""
    if uri.startswith("gs://"):
        bucket, prefix = parse_gs_uri(uri)
        return GCSBlobStore(bucket), prefix
    if not Path(uri).is_dir():
        raise EmptySelectionError(f"dataset folder {uri} does not exist")
    return LocalBlobStore(Path(uri)), ""


def _keyed(source: str, name: str) -> str:
    # NUL never occurs in an object name (check_object_name refuses it): no clash with the run's own names.
    return f"\x00{source}\x00{name}"


def _class_counts(ds: DatasetResult, ids: set[str]) -> dict[str, int]:
    from trainer import CLASS_NAMES

    counts: dict[str, int] = {}
    for i in ids:
        for c in ds.classes.get(i, []):
            counts[CLASS_NAMES[c]] = counts.get(CLASS_NAMES[c], 0) + 1
    return counts


def _checkpoint_epoch(path: Path) -> int | None:
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    except Exception:  # noqa: BLE001
        return None


def _software() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("ultralytics", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out

"""New feedback: which Inference API records count as new since the deployed model, in one place.

The trainer's incremental selection (trainer/pipeline.py) and the operator's TrainingSchedule (which decides
whether a retraining is worth it) both use this module, so "new samples" means the same to both:

  a record of the `inferences` table is a new sample when it is verified or corrected, has a label file,
  has at least `min_detections` detections, and was updated after the deployed model's data cutoff;

and the deployed model's data cutoff is the newest `data_cutoff` along the lineage of `latest` (that version
and the versions it was fine-tuned from), None while no version trained on inferences is deployed.

Standard library only: the operator's image imports it without torch or Ultralytics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

# Reviewed by a person: the statuses that are feedback. Pending records are unreviewed, rejected ones wrong.
VERIFIED_STATUSES: tuple[str, ...] = ("verified", "corrected")

# The registry's side (trainer/migrations): the deployed version and the lineage of every version.
LATEST_SQL = "SELECT version FROM latest_model WHERE id = 1"
VERSIONS_SQL = "SELECT number, base_version, data_cutoff FROM model_versions WHERE state = 'registered'"
# Both registry tables exist once a trainer has run its migrations; before that nothing is deployed.
REGISTRY_PRESENT_SQL = (
    "SELECT to_regclass('latest_model') IS NOT NULL AND to_regclass('model_versions') IS NOT NULL AS present"
)

# Records updated after a cutoff, every status (the trainer counts each reason a record is left out).
INFERENCES_SINCE_SQL = (
    "SELECT id, image_object, label_object, status, detection_count, updated_at FROM inferences "
    "WHERE ($1::timestamptz IS NULL OR updated_at > $1::timestamptz) ORDER BY updated_at, id"
)

_STATUS_LIST = ", ".join(f"'{s}'" for s in VERIFIED_STATUSES)
# The predicate of a new sample, written so that the partial index of docs/CONTRACTS.md answers it:
# inferences_new_feedback ON inferences (updated_at, detection_count)
#     WHERE status IN ('verified', 'corrected') AND label_object IS NOT NULL
FEEDBACK_PREDICATE = f"status IN ({_STATUS_LIST}) AND label_object IS NOT NULL"
INDEX_NAME = "inferences_new_feedback"
INDEX_SQL = (
    f"CREATE INDEX IF NOT EXISTS {INDEX_NAME} ON inferences (updated_at, detection_count) "
    f"WHERE {FEEDBACK_PREDICATE}"
)


def new_samples_sql(*, since: bool) -> str:
    """Counts new samples, reading at most $2 index entries (the caller's threshold), so the count stays
    cheap however large the table or old the cutoff. Parameters: $1 min_detections, $2 limit, and $3 the
    cutoff when `since` (no cutoff: every record is new)."""
    after = " AND updated_at > $3::timestamptz" if since else ""
    return (
        "SELECT count(*) AS n FROM (SELECT 1 FROM inferences "  # noqa: S608 - constants only, values bound
        f"WHERE {FEEDBACK_PREDICATE} AND detection_count >= $1::integer{after} LIMIT $2::bigint) AS new"
    )


def is_new_sample(
    status: str,
    label_object: str | None,
    detections: int,
    updated_at: datetime | None,
    *,
    since: datetime | None,
    min_detections: int,
) -> bool:
    """The same rule as new_samples_sql, for records already read (the trainer's selection)."""
    return (
        status in VERIFIED_STATUSES
        and bool(label_object)
        and detections >= min_detections
        and (since is None or (updated_at is not None and updated_at > since))
    )


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))  # SQLite hands back text
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def deployed_cutoff(latest: int | None, versions: Iterable[Mapping[str, Any]]) -> datetime | None:
    """The newest feedback the deployed model has learned from: the data cutoff along the lineage of
    `latest` (that version and the bases it was fine-tuned from). The next incremental run starts after it
    and fine-tunes latest, so feedback trained into a version the gate refused is trained again rather than
    lost; None (everything is new) until a version trained on inferences is deployed.

    versions: rows of VERSIONS_SQL (number, base_version, data_cutoff).
    """
    if latest is None:
        return None
    by_number = {row["number"]: row for row in versions}
    cutoffs: list[datetime] = []
    number: int | None = latest
    seen: set[int] = set()
    while number is not None and number in by_number and number not in seen:
        seen.add(number)
        cutoff = _as_datetime(by_number[number]["data_cutoff"])
        if cutoff is not None:
            cutoffs.append(cutoff)
        number = by_number[number]["base_version"]
    return max(cutoffs) if cutoffs else None

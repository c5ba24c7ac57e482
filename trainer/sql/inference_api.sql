-- The Inference API's table, as the trainer reads it (the API owns it; the trainer never writes it).
-- Shipped for tests and local runs.
CREATE TABLE IF NOT EXISTS inferences (
    id              TEXT PRIMARY KEY,
    image_object    TEXT NOT NULL,      -- object name in GCS_IMAGES_BUCKET, e.g. images/2026/11/26/<id>.jpg
    label_object    TEXT,               -- YOLO label file (verified or corrected boxes), e.g. labels/.../<id>.txt
    status          TEXT NOT NULL CHECK (status IN ('pending', 'verified', 'corrected', 'rejected')),
    detection_count INTEGER NOT NULL DEFAULT 0 CHECK (detection_count >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS inferences_updated_at ON inferences (updated_at);
-- What the operator's TrainingSchedule needs (trainer/feedback.py: new_samples_sql): the new-sample count
-- reads only the index entries after the deployed model's data cutoff, and at most the schedule's threshold
-- of them, whatever the table's size (bench/feedback_count.py).
CREATE INDEX IF NOT EXISTS inferences_new_feedback ON inferences (updated_at, detection_count)
    WHERE status IN ('verified', 'corrected') AND label_object IS NOT NULL;

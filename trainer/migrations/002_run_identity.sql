-- Since 002 a run's id is its TrainingRun's uid (a run deleted and created again under the same name is a
-- new run); the TrainingRun's namespace and name are kept beside it, for people and for the sweep that
-- marks the rows of runs that ended without their trainer (Job deleted, deadline exceeded, run deleted).
-- Rows written before 002 keep their "namespace/name" ids. heartbeat_at: the trainer's last sign of life.
ALTER TABLE training_runs ADD COLUMN run_namespace TEXT;
ALTER TABLE training_runs ADD COLUMN run_name TEXT;
ALTER TABLE training_runs ADD COLUMN heartbeat_at TIMESTAMPTZ;
CREATE INDEX training_runs_status ON training_runs (status, run_namespace);

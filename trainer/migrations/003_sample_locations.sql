-- Where a dataset-mode sample lives (the dataset URI and its image and label object names in that dataset's
-- store), so a later run can replay it or validate on it again. NULL for inference records: their location is
-- the Inference API's table.
ALTER TABLE training_samples ADD COLUMN source TEXT;
ALTER TABLE training_samples ADD COLUMN image_object TEXT;
ALTER TABLE training_samples ADD COLUMN label_object TEXT;

"""Versioned SQL migrations for the trainer's own tables, applied in order at start."""

"""A scripted stand-in for the trainer, for the operator's integration tests (see __main__.py)."""

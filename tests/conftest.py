"""Test session wiring: fixtures for the real services live in their own modules."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.controlplane.fixtures",
    "tests.images.fixtures",
]

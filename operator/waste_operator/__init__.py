"""The TrainingRun operator: a kopf controller that turns each TrainingRun into one training Job.

Imported as ``waste_operator`` (see pyproject.toml): a top-level package named ``operator`` would shadow the
standard library. ``python -m waste_operator`` runs it.
"""

GROUP = "training.wastedetection.io"
VERSION = "v1alpha1"
PLURAL = "trainingruns"
KIND = "TrainingRun"
API_VERSION = f"{GROUP}/{VERSION}"

# Jobs and their Pods carry this label; the operator's watches select on it.
MANAGED_BY = "waste-detection-operator"
RUN_LABEL = f"{GROUP}/trainingrun"

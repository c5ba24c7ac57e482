"""Where the first run's weights come from when models/latest/ is empty. Pure: paths and messages.

`--base-model` (spec.baseModel) is one of:
- a file name such as `yolov8n.pt`: looked up in $TRAINER_WEIGHTS_DIR (the trainer image bakes Ultralytics'
  COCO-pretrained yolov8n.pt there), then in $TRAINER_LOCAL_DIR/weights/ (the CLI's folder);
- `gs://bucket/path.pt`: your own weights, downloaded at the start of the run;
- a `.yaml` architecture (`yolov8n.yaml`): trains from scratch, needs no file;
- a path to a `.pt` file (CLI).
Nothing is ever downloaded from the internet: the trainer runs offline.
"""

from __future__ import annotations

from pathlib import Path


def is_architecture(text: str) -> bool:
    return text.endswith((".yaml", ".yml"))


def weight_candidates(text: str, weights_dir: Path | None, local_dir: Path) -> list[Path]:
    """The files a --base-model value may name, most specific first."""
    if "/" in text or text.startswith("~"):
        return [Path(text).expanduser()]
    out = [weights_dir / text] if weights_dir else []
    return out + [local_dir / "weights" / text, Path("weights") / text, Path(text)]


def missing_message(
    text: str, weights_dir: Path | None, local_dir: Path, latest: str, in_cluster: bool
) -> str:
    """What to do when the base model is nowhere: in a cluster, only what a user can change there."""
    if in_cluster:
        where = (
            f"in this trainer image's {weights_dir}"
            if weights_dir
            else "in this trainer image (no TRAINER_WEIGHTS_DIR)"
        )
        return (
            f"base model {text!r} is not {where} and {latest} is empty (no model promoted yet): use the "
            "trainer image built by Dockerfile.trainer (it bakes yolov8n.pt), set spec.baseModel to "
            "gs://BUCKET/PATH.pt to start from your own weights (readable by the trainer's service account), "
            "or spec.baseModel: yolov8n.yaml to train from scratch"
        )
    places = " or ".join(str(p) for p in weight_candidates(text, weights_dir, local_dir)[:2])
    return (
        f"base model {text!r} is not available offline and {latest} is empty: put the file at {places}, "
        "pass --base-model /path/to/weights.pt or gs://BUCKET/PATH.pt, "
        "or pass --base-model yolov8n.yaml to train from scratch"
    )

# The demo's data and training settings, measured with bench/demo.py (figures in bench/RESULTS.md).
# Sourced by scripts/demo.sh; tests/integration/test_demo.py trains the demo's v1 with the same ones.
# shellcheck disable=SC2034  # used by whoever sources this file

# v1's data: 120 generated 96 px images with one or two boxes each, Plastic rare (the dataset's own 80/20 split).
V1_DATA=(--images 120 --weights Plastic=0.05)
# The feedback that arrives next: 40 new images, about half of their boxes Plastic.
FEEDBACK_DATA=(--images 40 --seed 1 --weights Plastic=5)
# Both runs: CPU, 128 px (the 96 px images upscaled learn better than at their own size), batch 16.
TRAIN=(--base-model yolov8n.yaml --img-size 128 --batch-size 16 --device cpu)
V1_TRAIN=(--epochs 25)
# Fine-tuned from v1; --incremental: replay v1's training images and validate on v1's validation images too.
FEEDBACK_TRAIN=(--incremental --epochs 10)

"""The waste-detection training job: verified feedback in, a versioned YOLOv8 model out."""

CLASS_NAMES: tuple[str, ...] = ("Biodegradable", "Carton", "Glass", "Metal", "Paper", "Plastic")
MODEL_FILENAME = "yolov8n_waste.pt"

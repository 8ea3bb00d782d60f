"""Models: the registry of built-in and uploaded models, `VisionModel`, EfficientNet-Lite0, labels and shipped data."""

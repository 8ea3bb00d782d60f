"""ConvViz's computing core: the three views of Chollet's §5.4, UI-free.

Every function takes numpy arrays and `VisionModel`s and returns numpy arrays
or plain Python values; nothing here imports Streamlit.

The package is grouped by concern:

- `inputs/`: images (the hardened loader) and the bundled sample photos.
- `models/`: the model registry, `VisionModel`, EfficientNet-Lite0 and its
  PyTorch weights, ImageNet labels, the shipped data.
- `safety/`: the check of uploaded model files in a limited child process.
- `graph/`: the layer-by-layer runner for nested models, layer geometry, the
  model summary.
- `intermediate_activations.py`, `predictions.py`, `overlays.py`: the activations view, top
  classes, heatmaps as pictures.
- `features/`: filter patterns and their shared atlas cache.
- `cam/`: class-activation maps.
- `jobs.py`: the one bounded pool for long computations.

The names below are loaded on first use (PEP 562), so `import
convviz_core.errors` or `convviz_core.paths` does not import TensorFlow.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "InputError": "convviz_core.errors",
    "VisionModel": "convviz_core.models.vision_model",
    "activation_grid": "convviz_core.intermediate_activations",
    "activations": "convviz_core.intermediate_activations",
    "dead_channels": "convviz_core.intermediate_activations",
    "available_models": "convviz_core.models.registry",
    "load_model": "convviz_core.models.registry",
    "load_uploaded_model": "convviz_core.models.registry",
    "colorize": "convviz_core.overlays",
    "overlay": "convviz_core.overlays",
    "predict": "convviz_core.predictions",
    "grad_cam": "convviz_core.cam.gradcam",
    "class_activation_map": "convviz_core.cam.methods",
    "class_activation_maps": "convviz_core.cam.methods",
    "CAM_METHODS": "convviz_core.cam.methods",
    "deletion_insertion": "convviz_core.metrics.deletion_insertion",
    "average_drop_increase": "convviz_core.metrics.average_drop",
    "random_baseline": "convviz_core.metrics.random_baseline",
    "road": "convviz_core.metrics.road",
    "cascading_randomization": "convviz_core.metrics.sanity",
    "load_image": "convviz_core.inputs.images",
    "sample_images": "convviz_core.inputs.samples",
    "filter_patterns": "convviz_core.features.patterns",
    "pattern_grid": "convviz_core.features.patterns",
    "default_pattern_layer": "convviz_core.features.patterns",
}

# Modules that lived at the top of the package before it was grouped by
# concern; `from convviz_core import gradcam` (notebooks, old scripts) still works.
_MOVED_MODULES = {
    "images": "convviz_core.inputs.images",
    "samples": "convviz_core.inputs.samples",
    "model": "convviz_core.models.vision_model",
    "efficientnet_lite": "convviz_core.models.efficientnet_lite",
    "torch_weights": "convviz_core.models.torch_weights",
    "labels": "convviz_core.models.labels",
    "model_check": "convviz_core.safety.model_check",
    "model_check_child": "convviz_core.safety.model_check_child",
    "geometry": "convviz_core.graph.geometry",
    "summary": "convviz_core.graph.summary",
    "patterns": "convviz_core.features.patterns",
    "atlas_cache": "convviz_core.features.atlas_cache",
    "gradcam": "convviz_core.cam.gradcam",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MOVED_MODULES:
        value = importlib.import_module(_MOVED_MODULES[name])
    else:
        raise AttributeError(f"module 'convviz_core' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_MOVED_MODULES))

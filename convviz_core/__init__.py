"""ConvViz's computing core: the three views of Chollet's §5.4, UI-free.

Every function takes numpy arrays and `VisionModel`s and returns numpy arrays
or plain Python values; nothing here imports Streamlit.
"""

from convviz_core.activations import activation_grid, activations, dead_channels
from convviz_core.errors import InputError
from convviz_core.gradcam import colorize, grad_cam, overlay, predict
from convviz_core.images import load_image
from convviz_core.model import VisionModel
from convviz_core.models import available_models, load_model, load_uploaded_model
from convviz_core.samples import sample_images
from convviz_core.patterns import filter_patterns, pattern_grid

__all__ = [
    "InputError",
    "VisionModel",
    "activation_grid",
    "activations",
    "available_models",
    "colorize",
    "dead_channels",
    "filter_patterns",
    "grad_cam",
    "load_image",
    "load_model",
    "load_uploaded_model",
    "overlay",
    "pattern_grid",
    "predict",
    "sample_images",
]

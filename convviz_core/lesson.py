"""The layers a guided lesson shows, chosen once per model (the book's §5.4 as a sequence).

The Lesson page walks the book's figures 5-25 to 5-36 on any model: the first
layer's activations, deeper layers going abstract, dead channels, one
filter's pattern, the atlas by depth, the clear mode, Grad-CAM, the CAM family
and the sanity check. Which layers it shows is decided here, without a UI,
so that the page and the atlas precomputation agree on them.
"""

import dataclasses

import numpy as np

from convviz_core.features.patterns import convolution_layers, default_pattern_layer
from convviz_core.intermediate_activations import overview_layers

# The CAM methods a lesson compares: the book's, two that weigh pixels, and
# one that ignores the class (what the sanity check then exposes).
COMPARED_METHODS = ("grad-cam", "grad-cam++", "layer-cam", "eigen-cam")


@dataclasses.dataclass(frozen=True)
class LessonLayers:
    """The layers of one model that the lesson's steps show.

    Attributes:
        first: The first layer the book would show (a convolution after its
            nonlinearity): its channels are edges and colours.
        overview: Layers from the input to the output, for "going abstract".
        pattern: The layer of "one filter's pattern" and of the clear mode:
            the Filters page's default layer.
        by_depth: Convolutions from shallow to deep, for "the atlas by depth".
        cam: The layer Grad-CAM explains (the last spatial layer).
    """

    first: str
    overview: tuple
    pattern: str
    by_depth: tuple
    cam: str


def lesson_layers(model, depth_count=3, filters=64):
    """Chooses the layers of each step of the lesson for a model.

    "The atlas by depth" takes `depth_count` convolutions spread evenly from
    the Filters page's default layer to the last convolution, among those
    with at least `filters` filters (all convolutions when there are too few
    of those).

    Args:
        model: A `VisionModel`.
        depth_count: How many layers "the atlas by depth" shows.
        filters: The filters an atlas shows (the Filters page's 64).

    Returns:
        A `LessonLayers`.

    Raises:
        InputError: If the model has no layer with a spatial output.
    """
    overview = tuple(overview_layers(model))
    pattern = default_pattern_layer(model, filters)
    convolutions = convolution_layers(model)
    start = convolutions.index(pattern) if pattern in convolutions else 0
    deep = [name for name in convolutions[start:] if model.layer_info(name).output_shape[-1] >= filters]
    if len(deep) < depth_count:
        deep = convolutions[start:] if len(convolutions[start:]) >= depth_count else convolutions
    if deep:
        positions = np.linspace(0, len(deep) - 1, depth_count).round().astype(int)
        by_depth = tuple(deep[position] for position in dict.fromkeys(positions.tolist()))
    else:
        by_depth = (pattern,)
    return LessonLayers(
        first=overview[0], overview=overview, pattern=pattern, by_depth=by_depth, cam=model.default_cam_layer()
    )

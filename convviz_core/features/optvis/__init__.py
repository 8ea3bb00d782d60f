"""Feature visualisation in the Lucid recipe: the clear mode next to the book's gradient ascent.

The book (§5.4.2) finds a filter's pattern by gradient ascent on raw pixels,
which gives muted, high-frequency pictures. This package follows the recipe of
Olah et al., "Feature Visualization", Distill 2017
(https://distill.pub/2017/feature-visualization/) and Mordvintsev et al.,
"Differentiable Image Parameterizations", Distill 2018
(https://distill.pub/2018/differentiable-parameterizations/), organised like
lucent's `optvis`:

- `param/spatial.py`: how the image is parameterised (Fourier space with
  1/frequency scaling, or plain pixels).
- `param/color.py`: the decorrelated colour space and the sigmoid to pixels.
- `transform.py`: the random padding, jitter, scale and rotation applied at
  every step.
- `objectives.py`: what is maximised (`channel`, `neuron`, `diversity`).
- `render.py`: the optimisation loop (`render_patterns`).
- `quality.py`: the measures that compare patterns (transform robustness,
  high-frequency share).

Nothing here imports Streamlit; every entry point returns numpy arrays.
"""

from convviz_core.features.optvis.quality import high_frequency_share, transform_robustness
from convviz_core.features.optvis.render import (
    diversity_set,
    free_size_supported,
    render_patterns,
    render_size,
)

__all__ = [
    "diversity_set",
    "free_size_supported",
    "high_frequency_share",
    "render_patterns",
    "render_size",
    "transform_robustness",
]

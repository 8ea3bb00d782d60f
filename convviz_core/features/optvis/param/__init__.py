"""How the optimised image is parameterised: its spatial basis and its colour space."""

from convviz_core.features.optvis.param.color import to_valid_rgb
from convviz_core.features.optvis.param.spatial import FourierImage, PixelImage, image_parameterization

__all__ = ["FourierImage", "PixelImage", "image_parameterization", "to_valid_rgb"]

"""Class-activation maps: where in the image the evidence for a class lies."""

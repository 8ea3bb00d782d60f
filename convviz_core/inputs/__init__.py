"""Inputs: the hardened image loader and the bundled sample photos."""

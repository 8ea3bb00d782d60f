"""The graph of a Keras model: running it layer by layer (nested models too), layer geometry, the summary."""

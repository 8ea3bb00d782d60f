"""A loaded model serves every user at once: concurrent views give sequential results."""

import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from convviz_core import VisionModel, activations, filter_patterns, grad_cam, predict

THREADS = 8
CLASSES = 5


def build_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights(
            [rng.normal(0.05, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()]
        )
    return model


def scale_pixels(images):
    return images / 255.0


def work(model, index, image):
    """What one user asks for: a heatmap of one class, and more."""
    return (
        grad_cam(model, image, index % CLASSES),
        grad_cam(model, image, None, "conv_a"),
        predict(model, image, top=CLASSES),
        activations(model, image, ["conv_b"])["conv_b"],
    )


def test_eight_threads_get_the_same_maps_as_a_sequential_run():
    keras_model = build_model()
    images = [
        np.random.default_rng(seed).integers(0, 256, (32 + seed, 40 - seed, 3), dtype=np.uint8)
        for seed in range(THREADS)
    ]
    sequential_model = VisionModel(keras_model, preprocess=scale_pixels)
    expected = [work(sequential_model, index, image) for index, image in enumerate(images)]

    # A fresh VisionModel: the threads also race to build its compiled functions.
    shared = VisionModel(keras_model, preprocess=scale_pixels)
    barrier = threading.Barrier(THREADS)

    def run(index):
        barrier.wait()
        return work(shared, index, images[index])

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, range(THREADS)))

    for index, (got, wanted) in enumerate(zip(results, expected, strict=True)):
        for got_array, wanted_array in (
            (got[0], wanted[0]),
            (got[1], wanted[1]),
            (got[3], wanted[3]),
        ):
            np.testing.assert_allclose(
                got_array, wanted_array, rtol=1e-6, atol=1e-6, err_msg=str(index)
            )
        assert [entry[:2] for entry in got[2]] == [entry[:2] for entry in wanted[2]]
        np.testing.assert_allclose([p for *_, p in got[2]], [p for *_, p in wanted[2]], rtol=1e-6)
    # Every thread computed something of its own (and some heatmaps are not blank).
    assert len({result[3].tobytes() for result in results}) == THREADS
    assert sum(result[0].max() == 1 for result in results) >= THREADS // 2


def test_threads_computing_patterns_and_heatmaps_at_once():
    keras_model = build_model()
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sequential_model = VisionModel(keras_model, preprocess=scale_pixels)
    expected_patterns = filter_patterns(
        sequential_model, "conv_b", [0, 5], steps=4, precision="float32"
    )
    expected_map = grad_cam(sequential_model, image, 2)

    shared = VisionModel(keras_model, preprocess=scale_pixels)
    barrier = threading.Barrier(4)

    def run(index):
        barrier.wait()
        if index % 2:
            return filter_patterns(shared, "conv_b", [0, 5], steps=4, precision="float32")
        return grad_cam(shared, image, 2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))

    for index, result in enumerate(results):
        if index % 2:
            assert np.abs(result.astype(int) - expected_patterns).max() <= 1
        else:
            np.testing.assert_allclose(result, expected_map, rtol=1e-6, atol=1e-6)

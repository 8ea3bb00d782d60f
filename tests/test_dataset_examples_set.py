"""Dataset examples over a large set, in batches: the same patches as the one-image-at-a-time function."""

import numpy as np
import pytest

import convviz_core
from convviz_core import InputError
from convviz_core.features.dataset_examples import dataset_examples, dataset_examples_of_set


def disc(centre, radius, colour, size):
    rows, columns = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2] = colour
    return image


def test_the_batched_set_gives_the_patches_of_the_one_image_path():
    model = convviz_core.load_model("small-convnet")
    images = {
        f"disc-{index}": disc((20 + 15 * index, 90 - 10 * index), 12 + 4 * index, (60 * index, 200, 250 - 40 * index),
                              150 + 20 * index)
        for index in range(5)
    }
    sources = list(images.values())
    sources.insert(2, InputError("refused"))
    names = list(images)
    names.insert(2, "broken")
    done = []

    def load(source):
        if isinstance(source, InputError):
            raise source
        return source

    found = dataset_examples_of_set(model, "conv2d_2", 3, sources, names, count=4, per_image=2, batch_size=2,
                                    load=load, progress=lambda index, total: done.append((index, total)))
    expected = dataset_examples(model, "conv2d_2", 3, images, count=4, per_image=2)
    assert [(example.image_key, example.position, example.box) for example in found] == [
        (example.image_key, example.position, example.box) for example in expected
    ]
    np.testing.assert_allclose([example.score for example in found], [example.score for example in expected],
                               rtol=1e-5)
    for example, reference in zip(found, expected):
        np.testing.assert_array_equal(example.patch, reference.patch)
    assert done[-1] == (6, 6)


def test_a_channel_out_of_range_is_refused():
    model = convviz_core.load_model("small-convnet")
    with pytest.raises(InputError, match="there is no channel 999"):
        dataset_examples_of_set(model, "conv2d_2", 999, [], [])


# --- A user's set (a ZIP of images), the way the One-unit page reads it ------------------------------


def red_detector_keras():
    """A tiny Keras model whose unit `colour` 0 is the red value of a pixel, channel 1 the green."""
    import keras

    inputs = keras.Input((16, 16, 3))
    colour = keras.layers.Conv2D(2, 1, activation="relu", name="colour")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(colour)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(pooled)
    model = keras.Model(inputs, outputs, name="red_detector")
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, 0, 0] = 1.0  # Channel 0: red.
    kernel[0, 0, 1, 1] = 1.0  # Channel 1: green.
    model.get_layer("colour").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def red_detector():
    """`red_detector_keras` with inputs divided by 255: unit `colour` 0 is a pixel's red value / 255."""
    return convviz_core.VisionModel(red_detector_keras(), preprocess=lambda batch: batch / 255.0)


def png(image):
    import cv2

    return cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))[1].tobytes()


def zip_of(files):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_set_from_a_zip_gives_the_known_strongest_patches_and_names_the_skipped_images():
    from convviz_core.features.dataset_examples import dataset_examples_of_image_set
    from convviz_core.inputs.image_sets import image_set_from_zip

    dim = np.zeros((40, 40, 3), np.uint8)
    dim[..., 0] = 100
    bright = np.zeros((32, 48, 3), np.uint8)
    bright[8:24, 24:48, 0] = 250  # The right half's middle: the 1x1 unit's strongest pixels.
    green = np.zeros((20, 20, 3), np.uint8)
    green[..., 1] = 200
    data = zip_of({"set/dim.png": png(dim), "set/green.png": png(green), "set/broken.png": b"not a png",
                   "set/bright.png": png(bright)})
    image_set = image_set_from_zip(data, title="set.zip")
    assert image_set.names == ("set/dim.png", "set/green.png", "set/broken.png", "set/bright.png")
    examples, skipped = dataset_examples_of_image_set(red_detector(), "colour", 0, image_set)
    # The unit is red / 255 at each pixel: bright's 250, then dim's 100; green never fires.
    assert [example.image_key for example in examples] == ["set/bright.png", "set/dim.png"]
    np.testing.assert_allclose([example.score for example in examples], [250 / 255, 100 / 255], rtol=1e-5)
    # A 1x1 unit looks at one model pixel: 2x3 pixels of the 32x48 image (16x16 model input), all red.
    assert examples[0].patch.shape == (2, 3, 3) and (examples[0].patch[..., 0] == 250).all()
    assert [name for name, _ in skipped] == ["set/broken.png"]
    assert "not an image ConvViz can read" in skipped[0][1]


def test_a_set_with_no_readable_image_is_refused_with_what_to_do():
    from convviz_core.features.dataset_examples import dataset_examples_of_image_set
    from convviz_core.inputs.image_sets import image_set_from_zip

    image_set = image_set_from_zip(zip_of({"a.png": b"not a png", "b.jpg": b"nor a jpeg"}), title="bad.zip")
    with pytest.raises(InputError) as raised:
        dataset_examples_of_image_set(red_detector(), "colour", 0, image_set)
    assert str(raised.value).startswith(
        "None of the 2 images in bad.zip could be read; choose a set of JPEG or PNG images. a.png: This file is "
        "not an image"
    )


def test_a_huge_image_in_a_set_is_skipped_and_the_others_are_shrunk():
    import io

    from PIL import Image

    from convviz_core.inputs.image_sets import load_set_image
    from convviz_core.inputs.images import MAX_PIXELS

    # A one-bit picture: a small file, refused from its header before any pixel is decoded.
    side = int(MAX_PIXELS**0.5) + 8
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    huge = buffer.getvalue()
    with pytest.raises(InputError, match="megapixels"):
        load_set_image(huge)
    assert load_set_image(png(np.zeros((3000, 1500, 3), np.uint8))).shape == (1024, 512, 3)


def test_a_large_jpeg_of_a_set_is_decoded_at_a_reduced_scale_close_to_the_full_decode():
    import io

    from PIL import Image

    from convviz_core.inputs.image_sets import load_set_image
    from convviz_core.inputs.images import fit_within, load_image

    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
    reduced, full = load_set_image(buffer.getvalue()), fit_within(load_image(buffer.getvalue()))
    assert reduced.shape == full.shape == (768, 1024, 3)
    assert np.abs(reduced.astype(int) - full).mean() < 2

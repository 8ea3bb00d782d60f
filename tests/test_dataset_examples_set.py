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

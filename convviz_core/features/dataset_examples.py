"""Dataset examples: the image patches that excite one unit most (OpenAI Microscope's view, for your own images).

A filter's pattern shows what the unit wants in an invented picture; the
patches of real photos where it fires hardest show what it finds in the world.
For each image the unit's channel is computed, its strongest positions are
taken (at most a few per image, apart from each other), and each position is
mapped back to the part of the image that pixel of the layer looks at (its
receptive field, `VisionModel.input_box`).
"""

import dataclasses

import numpy as np

from convviz_core.errors import InputError
from convviz_core.inputs.images import check_rgb_image
from convviz_core.intermediate_activations import activations, batch_activations


@dataclasses.dataclass(frozen=True)
class Example:
    """One patch where a unit fires.

    Attributes:
        image_key: The key of the image it comes from.
        score: The unit's activation at that position.
        position: (row, column) in the layer's output.
        box: (top, left, bottom, right) in the image's own pixels (bottom and
            right exclusive).
        patch: RGB uint8 array, the image inside `box`.
    """

    image_key: str
    score: float
    position: tuple
    box: tuple
    patch: np.ndarray


def strongest_positions(channel, count, separation=1):
    """The positions of a 2-D map's highest values, at least `separation` cells apart.

    Args:
        channel: float array (height, width).
        count: The most positions to return.
        separation: Chebyshev distance two positions must exceed.

    Returns:
        [(row, column, value)], highest first; positions whose value is not
        positive are left out (a unit that does not fire shows nothing).
    """
    values = np.nan_to_num(np.asarray(channel, dtype=np.float64), nan=-np.inf)
    order = np.argsort(-values, axis=None, kind="stable")
    chosen = []
    for flat in order:
        row, column = divmod(int(flat), values.shape[1])
        value = values[row, column]
        if value <= 0 or len(chosen) == count:
            break
        if all(max(abs(row - r), abs(column - c)) > separation for r, c, _ in chosen):
            chosen.append((row, column, float(value)))
    return chosen


def dataset_examples(model, layer_name, channel, images, count=8, per_image=2, layer_activations=None):
    """Finds the image patches that excite one channel of a layer most.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        channel: A channel of that layer.
        images: {image key: RGB uint8 array}, e.g. the sample photos and the
            user's uploads.
        count: The most patches to return.
        per_image: The most patches from one image.
        layer_activations: Optional function (image key, image) -> the
            layer's activation (height, width, channels), for a caller that
            caches them; default: computed here.

    Returns:
        [`Example`], strongest first.

    Raises:
        InputError: For an unknown layer or a channel out of its range.
    """
    _check_channel(model, layer_name, channel)
    found = []
    for image_key, image in images.items():
        image = check_rgb_image(image)
        if layer_activations is None:
            activation = activations(model, image, [layer_name])[layer_name]
        else:
            activation = layer_activations(image_key, image)
        unit = activation[:, :, int(channel)]
        # Positions of the same patch are at least half a receptive field apart.
        for row, column, value in strongest_positions(unit, per_image, separation=1):
            found.append((value, image_key, image, (row, column)))
    found.sort(key=lambda entry: -entry[0])
    return [_example(model, layer_name, image_key, image, value, position)
            for value, image_key, image, position in found[:count]]


def _check_channel(model, layer_name, channel):
    channels = model.layer_info(layer_name).output_shape[-1]
    if not 0 <= int(channel) < channels:
        raise InputError(
            f"Layer '{layer_name}' has channels 0 to {channels - 1}; there is no channel {channel}. "
            "Choose a channel in that range."
        )


def _example(model, layer_name, image_key, image, value, position):
    row, column = position
    box = _scale_box(model.input_box(layer_name, row, column), model.input_size, image.shape[:2])
    patch = np.ascontiguousarray(image[box[0] : box[2], box[1] : box[3]])
    return Example(image_key, value, (row, column), box, patch)


def dataset_examples_of_set(model, layer_name, channel, sources, names, count=9, per_image=1, batch_size=32,
                            load=None, progress=None, on_skip=None):
    """Finds the patches that excite one channel most over a large set, in batches.

    The images are read one at a time and go through the model in batches
    of `batch_size`; only the images that hold one of the best `count`
    patches so far are kept in memory, so a set of thousands costs a few
    images of memory. An image the loader refuses is skipped.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        channel: A channel of that layer.
        sources: Images: anything `load` takes (or RGB uint8 arrays).
        names: One image key per source.
        count: The most patches to return.
        per_image: The most patches from one image.
        batch_size: Images per forward pass.
        load: Function source -> RGB uint8 array (default
            `inputs.images.load_image`); it may raise `InputError` to skip.
        progress: Optional function (images done, total); it may raise to cancel.
        on_skip: Optional function (name, `InputError`) told of each image
            the loader refused.

    Returns:
        [`Example`], strongest first (the same as `dataset_examples` over
        the same images, up to float rounding between batch sizes).
    """
    from convviz_core.inputs.images import load_image

    _check_channel(model, layer_name, channel)
    load = load or load_image
    sources, names = list(sources), list(names)
    best, kept = [], {}

    def score(images, keys):
        values = batch_activations(model, np.concatenate([model.prepare(image) for image in images]),
                                   [layer_name])[layer_name][..., int(channel)]
        for image, key, unit in zip(images, keys, values):
            for row, column, value in strongest_positions(unit, per_image, separation=1):
                best.append((value, key, (row, column)))
                kept[key] = image
        best.sort(key=lambda entry: -entry[0])
        del best[count:]
        wanted = {key for _, key, _ in best}
        for key in list(kept):
            if key not in wanted:
                del kept[key]

    images, keys = [], []
    for index, (source, name) in enumerate(zip(sources, names)):
        try:
            images.append(source if isinstance(source, np.ndarray) else load(source))
            keys.append(name)
        except InputError as error:
            if on_skip is not None:
                on_skip(name, error)
        if len(images) == batch_size or index == len(sources) - 1:
            if images:
                score(images, keys)
            images, keys = [], []
            if progress is not None:
                progress(index + 1, len(sources))
    return [_example(model, layer_name, key, kept[key], value, position) for value, key, position in best]


def dataset_examples_of_image_set(model, layer_name, channel, image_set, count=9, progress=None):
    """Finds the patches that excite one channel most over a user's `ImageSet`, and the images skipped.

    Each image is decoded by `inputs.image_sets.load_set_image` (the hardened
    loader, shrunk to a longer side of 1024), so a patch is cut from that.

    Args:
        model: A `VisionModel`.
        layer_name: A layer from `model.layer_names`.
        channel: A channel of that layer.
        image_set: An `inputs.image_sets.ImageSet`.
        count: The most patches to return (one per image).
        progress: Optional function (images done, total); it may raise to cancel.

    Returns:
        ([`Example`] strongest first, named by the images' names in the set;
        [(name, message)] of the images that could not be read).

    Raises:
        InputError: For an unknown layer, a channel out of range, or a set
            none of whose images could be read.
    """
    from convviz_core.inputs.image_sets import load_set_image

    skipped = []
    examples = dataset_examples_of_set(
        model, layer_name, channel, image_set.sources, image_set.names, count=count, per_image=1,
        load=load_set_image, progress=progress, on_skip=lambda name, error: skipped.append((name, str(error))),
    )
    if skipped and len(skipped) == len(image_set):
        name, message = skipped[0]
        raise InputError(
            f"None of the {len(image_set):,} images in {image_set.title} could be read; choose a set of JPEG or "
            f"PNG images. {name}: {message}"
        )
    return examples, skipped


def _scale_box(box, model_size, image_size):
    """Maps a box from model-input pixels to the pixels of the image that was resized to it."""
    top, left, bottom, right = box
    scale_rows = image_size[0] / model_size[0]
    scale_columns = image_size[1] / model_size[1]
    top, bottom = int(np.floor(top * scale_rows)), int(np.ceil(bottom * scale_rows))
    left, right = int(np.floor(left * scale_columns)), int(np.ceil(right * scale_columns))
    top, left = min(top, image_size[0] - 1), min(left, image_size[1] - 1)
    return top, left, max(bottom, top + 1), max(right, left + 1)

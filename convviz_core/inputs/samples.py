"""Sample photographs that load with no network, from scikit-image's wheel.

Some `skimage.data` images are fetched from the internet on first use; every
one offered here is a file inside the scikit-image wheel (checked by
`tests/test_samples.py` with the network blocked). All are CC0 or public
domain. Grayscale photographs are offered only when an ImageNet model has
something to say about them (the camera on its tripod).
"""

import functools

import numpy as np
import skimage.data

from convviz_core.errors import InputError

# Name -> (loader in skimage.data, caption). Names are stable, lowercase keys;
# the order is the gallery's order.
_SAMPLES = {
    "chelsea": (
        "chelsea",
        "Chelsea the cat, a close-up of her face (CC0, Stefan van der Walt).",
    ),
    "coffee": (
        "coffee",
        "A cup of espresso on a red saucer, on a wooden table (CC0, Rachel Michetti).",
    ),
    "rocket": (
        "rocket",
        "A Falcon 9 rocket on its launch pad at night, between lightning towers "
        "(public domain, SpaceX).",
    ),
    "astronaut": (
        "astronaut",
        "Astronaut Eileen Collins in an orange spacesuit, with her helmet, a US flag "
        "and a model space shuttle (public domain, NASA).",
    ),
    "camera": (
        "camera",
        "A man filming with a camera on a tripod in a park; grayscale, shown as RGB "
        "(CC0, Lav Varshney).",
    ),
}


def _as_rgb_uint8(image, name):
    # These checks guard against a scikit-image release that changes a sample,
    # not against anything a user does, hence ValueError.
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Sample {name!r} is {image.dtype}; expected uint8.")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Sample {name!r} has shape {image.shape}; expected (H, W, 3).")
    return np.ascontiguousarray(image)


@functools.lru_cache(maxsize=1)
def _load_samples():
    samples = {}
    for name, (loader_name, _) in _SAMPLES.items():
        image = _as_rgb_uint8(getattr(skimage.data, loader_name)(), name)
        # Every caller shares these arrays, so none of them may change one.
        image.setflags(write=False)
        samples[name] = image
    return samples


def sample_names():
    """Returns the names of the sample photographs, in gallery order.

    Returns:
        A list of lowercase names such as "chelsea" and "coffee".
    """
    return list(_SAMPLES)


def sample_captions():
    """Returns a one-line caption (what it shows, licence) for each sample.

    Returns:
        A dict from sample name to caption, in gallery order.
    """
    return {name: caption for name, (_, caption) in _SAMPLES.items()}


def sample_images():
    """Returns the sample photographs, loaded from disk once per process.

    The samples are "chelsea" (a cat), "coffee" (a cup of espresso), "rocket"
    (a Falcon 9 on its launch pad), "astronaut" (Eileen Collins in a
    spacesuit) and "camera" (a man with a camera on a tripod, grayscale); see
    `sample_captions`.

    Returns:
        A new dict from name to an RGB uint8 array of shape (height, width, 3).
        The arrays are read-only because they are shared; copy one before
        changing it.
    """
    return dict(_load_samples())


def sample_image(name):
    """Returns one sample photograph by name.

    Args:
        name: One of `sample_names()`.

    Returns:
        A read-only RGB uint8 array of shape (height, width, 3).

    Raises:
        InputError: If there is no sample with that name.
    """
    samples = _load_samples()
    if name not in samples:
        raise InputError(
            f"There is no sample image named {name!r}; choose one of {sample_names()}."
        )
    return samples[name]

"""ImageNet class names, shipped with ConvViz so that decoding needs no network.

`data/imagenet_classes.json` holds the 1000 [synset id, name] pairs in class
order, with the names keras's `decode_predictions` uses ("African_elephant",
"espresso"). `tools/build_imagenet_labels.py` builds it.
"""

import functools
import importlib.resources
import json

NUMBER_OF_IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _imagenet_class_index():
    path = importlib.resources.files("convviz_core.models") / "data" / "imagenet_classes.json"
    text = path.read_text(encoding="utf-8")
    pairs = json.loads(text)
    if len(pairs) != NUMBER_OF_IMAGENET_CLASSES:
        raise ValueError(
            f"imagenet_classes.json has {len(pairs)} classes; expected "
            f"{NUMBER_OF_IMAGENET_CLASSES}. Rebuild it with tools/build_imagenet_labels.py."
        )
    # Tuples, so that the cached values cannot be changed by a caller.
    return tuple((synset_id, name) for synset_id, name in pairs)


def imagenet_class_names():
    """Returns the 1000 ImageNet class names, as keras's `decode_predictions` spells them.

    Returns:
        A new list of 1000 names in class-index order, e.g. index 967 is
        "espresso". Names are not unique: "crane" is both 134 (the bird) and
        517 (the machine).
    """
    return [name for _, name in _imagenet_class_index()]


def imagenet_synset_ids():
    """Returns the 1000 ImageNet WordNet synset ids in class-index order.

    Returns:
        A new list of ids such as "n01440764" (index 0, tench).
    """
    return [synset_id for synset_id, _ in _imagenet_class_index()]

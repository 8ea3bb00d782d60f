"""The image files under the paths a user names."""

import os
from pathlib import Path

from convviz_core.errors import InputError

# Suffixes of the formats the hardened loader reads (`inputs.images.ALLOWED_FORMATS`).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def find_images(paths):
    """Lists the image files among paths: files as given, folders searched recursively.

    A file named explicitly is kept whatever its suffix (the loader then says
    whether it is an image); in folders only files with an image suffix are
    taken, in sorted order, hidden files and folders skipped.

    Args:
        paths: Paths (str or os.PathLike) of files or folders.

    Returns:
        A list of `Path`, without duplicates, in the order found.

    Raises:
        InputError: If a path does not exist, or nothing is found.
    """
    found, seen = [], set()

    def add(path):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for path in map(Path, paths):
        if path.is_dir():
            for folder, folders, files in os.walk(path):
                folders[:] = sorted(name for name in folders if not name.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        add(Path(folder, name))
        elif path.is_file():
            add(path)
        else:
            raise InputError(f"There is no file or folder at '{path}'. Check the path.")
    if not found:
        raise InputError(
            "No image files were found in the paths given. ConvViz reads files ending in "
            + ", ".join(IMAGE_SUFFIXES) + "."
        )
    return found

"""User file names made safe to show: the one rule for images, models and class-name files."""

import re
from pathlib import PurePosixPath

MAX_DISPLAY_CHARACTERS = 60


def display_name(file_name, strip_suffixes=(), fallback="upload"):
    """A user's file name without folders, safe to show as Markdown and short.

    Folders (with "/" or "\\" separators) are dropped, an optional suffix is
    removed (case-insensitively), every character other than letters, digits,
    spaces and `._()+-` becomes "_", and the result is cut to
    `MAX_DISPLAY_CHARACTERS`.

    Args:
        file_name: The name the browser sent (anything; it is never trusted).
        strip_suffixes: Suffixes to remove, e.g. (".keras", ".h5").
        fallback: The name to use when nothing printable is left.

    Returns:
        A non-empty string.
    """
    name = PurePosixPath(str(file_name).replace("\\", "/")).name
    for suffix in strip_suffixes:
        if name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
            break
    safe = re.sub(r"[^\w.()+ -]", "_", name, flags=re.ASCII)
    return safe[:MAX_DISPLAY_CHARACTERS].strip() or fallback

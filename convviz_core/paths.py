"""Where ConvViz keeps files it builds (converted models, filter atlases)."""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Returns ConvViz's cache folder (created if needed), or a subfolder of it.

    The folder is `$CONVVIZ_CACHE_DIR` when set, else `$XDG_CACHE_HOME/convviz`,
    else `~/.cache/convviz`.

    Args:
        *parts: Names of nested subfolders.

    Returns:
        The folder's path; it exists when this returns.
    """
    root = os.environ.get("CONVVIZ_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        root = os.path.join(xdg, "convviz")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

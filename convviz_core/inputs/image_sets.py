"""A user's set of images (a ZIP or a local folder), kept as file bytes or paths, decoded one at a time.

The Dataset page explains a set and the One-unit page looks for a unit's
patches in it; both take it from here. A set keeps what its files hold, not
decoded pictures: 1,000 JPEGs are some 100 MB as files and would be 3 GB as
arrays at 1024 pixels.
"""

import dataclasses
import hashlib
import io
from pathlib import Path

from convviz_core.errors import InputError
from convviz_core.inputs.images import MAX_WORKING_SIDE, fit_within, load_image_info
from convviz_core.reports.archive import images_from_zip
from convviz_core.reports.discovery import find_images


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
    """Images named by the user, not yet decoded.

    Attributes:
        title: What to call the set ("holiday.zip", a folder's path).
        names: One name per image (its path inside the archive or folder).
        sources: One per image: its file's bytes, its `Path`, or the
            `InputError` that already refused it (a damaged member).
        digest: A SHA-256 (hex) naming the content: the archive's bytes, or
            the folder's file paths; caches of results over the set use it.
        archive: Whether the set is a ZIP archive's (then `digest` is the
            SHA-256 of the archive's bytes: a queue's worker finds the
            archive in the shared cache by it).
    """

    title: str
    names: tuple
    sources: tuple
    digest: str
    archive: bool = False

    def __len__(self):
        return len(self.names)


def image_set_from_zip(data, title="your set"):
    """Reads a ZIP archive's images into a set (with `reports.archive.images_from_zip`'s limits).

    Args:
        data: The archive's bytes.
        title: The name of the upload.

    Returns:
        An `ImageSet`.

    Raises:
        InputError: If the file is not a ZIP, holds no image, or breaks one
            of the archive limits.
    """
    members = images_from_zip(io.BytesIO(data))
    return ImageSet(
        title=title,
        names=tuple(name for name, _ in members),
        sources=tuple(source for _, source in members),
        digest=hashlib.sha256(data).hexdigest(),
        archive=True,
    )


def image_set_from_folder(folder):
    """Lists a local folder's images (searched recursively) as a set.

    Args:
        folder: The folder's path (str or os.PathLike).

    Returns:
        An `ImageSet` named by the paths relative to `folder`.

    Raises:
        InputError: If there is no such folder or no image in it.
    """
    folder = Path(folder)
    paths = find_images([folder])
    names = [path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name for path in paths]
    digest = hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()
    return ImageSet(title=str(folder), names=tuple(names), sources=tuple(paths), digest=digest)


def load_set_image(source):
    """Decodes one image of a set through the hardened loader, shrunk to `inputs.images.MAX_WORKING_SIDE`.

    A large JPEG is decoded at a reduced scale (`load_image_info`'s
    `draft_side`): a set of phone photos is read several times faster.

    Args:
        source: One of `ImageSet.sources`.

    Returns:
        RGB uint8 array.

    Raises:
        InputError: If the file was refused already or is not an image
            ConvViz can read.
    """
    if isinstance(source, InputError):
        raise source
    return fit_within(load_image_info(source, draft_side=MAX_WORKING_SIDE).pixels)

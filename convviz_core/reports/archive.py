"""Images out of an uploaded ZIP, with the limits a shared server needs against ZIP bombs."""

import zipfile
from pathlib import PurePosixPath

from convviz_core.errors import InputError
from convviz_core.inputs.images import MAX_FILE_BYTES
from convviz_core.reports.discovery import IMAGE_SUFFIXES

# At most this many images are taken from one archive.
MAX_ARCHIVE_IMAGES = 2000
# At most this many bytes, uncompressed, over all the images taken.
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
# Members of an archive that are not images are skipped, but no more than this many.
MAX_ARCHIVE_MEMBERS = 20000


def images_from_zip(file):
    """Reads the images of a ZIP archive, never trusting the sizes it declares.

    Folders, hidden files (and macOS's `__MACOSX` copies) and files without
    an image suffix are skipped. Each image is read through a bounded stream:
    at most `inputs.images.MAX_FILE_BYTES + 1` bytes, whatever its header
    says, and the total is bounded by `MAX_ARCHIVE_BYTES`. The images are then
    decoded by the caller through the hardened loader, one by one.

    Args:
        file: The archive, as a path or a binary file object.

    Returns:
        A list of (name inside the archive, bytes), in the archive's order.

    Raises:
        InputError: If the file is not a ZIP archive, holds no image, or
            breaks one of the limits.
    """
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError("This file is not a ZIP archive. Upload a .zip of JPEG or PNG images.") from None
    images, total = [], 0
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise InputError(
                f"The archive holds {len(members):,} files; ConvViz reads archives of at most "
                f"{MAX_ARCHIVE_MEMBERS:,}. Upload a smaller set."
            )
        for member in members:
            path = PurePosixPath(member.filename)
            if member.is_dir() or any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if len(images) == MAX_ARCHIVE_IMAGES:
                raise InputError(
                    f"The archive holds more than {MAX_ARCHIVE_IMAGES:,} images; ConvViz explains at most "
                    f"{MAX_ARCHIVE_IMAGES:,} at once. Split the set."
                )
            try:
                with archive.open(member) as stream:
                    data = stream.read(MAX_FILE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as error:
                # A damaged, encrypted or oddly compressed member: the others go on.
                images.append((member.filename, InputError(f"This file could not be read from the archive ({error}).")))
                continue
            if len(data) > MAX_FILE_BYTES:
                images.append((member.filename, InputError(
                    f"This file is larger than {MAX_FILE_BYTES // 2**20} MB uncompressed; it was skipped."
                )))
                continue
            total += len(data)
            if total > MAX_ARCHIVE_BYTES:
                raise InputError(
                    f"The archive's images add up to more than {MAX_ARCHIVE_BYTES // 2**20:,} MB uncompressed. "
                    "Upload a smaller set."
                )
            images.append((member.filename, data))
    if not images:
        raise InputError(
            "The archive holds no image files (" + ", ".join(IMAGE_SUFFIXES) + "). Upload a .zip of images."
        )
    return images

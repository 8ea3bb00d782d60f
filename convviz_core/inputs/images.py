"""The one image loader and the one resizer of ConvViz.

Every picture a user uploads passes through `load_image_info` (or its short
form `load_image`), which turns any supported file into an RGB `uint8` array or
raises `InputError` with a message that says what to do. `resize_to` is the
only place where an image is resized for a model.

The limits below are checked before any pixel is decoded, so a hostile file
costs little more than reading its header:

- `ALLOWED_FORMATS`: JPEG, PNG, WebP, BMP, GIF and TIFF. These cover photos,
  screenshots and scientific images; Pillow's other decoders (PSD, ICO, TGA,
  PCX, ...) are rarely uploaded on purpose and are never run on uploads.
- `MAX_FILE_BYTES`: 50 MB. A 40-megapixel JPEG at top quality is about 20 MB;
  at most `MAX_FILE_BYTES + 1` bytes are ever read from a source.
- `MAX_PIXELS`: 40 megapixels. That is above the 12-24 megapixels phones save
  by default and the 36 of full-frame cameras, while one decoded upload stays
  near 120 MB (160 MB with an alpha channel) on a server shared by everyone.
- `MIN_SIDE_PIXELS`: 8. A smaller image is blown up more than 28 times to fill
  a 224×224 model input, which leaves flat blocks that show nothing.
- `MAX_ASPECT_RATIO`: 50. A longer strip is squeezed past recognition when it
  is resized to a model's square input; panoramas (up to about 10:1) pass.
"""

import dataclasses
import io
import os
import struct

import cv2
import numpy as np
from PIL import ExifTags, Image

from convviz_core.errors import InputError

# Pillow's names for the formats ConvViz decodes; passed to `Image.open` so no
# other decoder ever sees an uploaded file.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE_PIXELS = 8
MAX_ASPECT_RATIO = 50
# The longer side an uploaded photo is reduced to for the dashboard and the
# command (`fit_within`): every view resizes to the model's input (224 or so)
# and overlays are shown on screen, so more pixels only cost memory in a
# server shared by a class.
MAX_WORKING_SIDE = 1024

# The background that transparent pixels are shown on.
BACKGROUND_COLOR = (255, 255, 255)

_ALLOWED_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF, TIFF"
_FORMAT_DISPLAY_NAMES = {"WEBP": "WebP"}

# Formats whose extra frames are an animation (the others hold pages, or, for
# MPO phone photos, previews and depth maps).
_ANIMATED_FORMATS = ("GIF", "WEBP", "PNG")

# What Pillow raises while it reads a broken or hostile file. `Warning` is here
# because a process that runs with warnings turned into errors (`-W error`)
# gets Pillow's `DecompressionBombWarning` and corrupt-EXIF warnings raised.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    Image.DecompressionBombError,
    Warning,
)

# Modes with an alpha channel; they are composited on `BACKGROUND_COLOR`.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

# How to turn a stored image upright for each EXIF orientation value.
_ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# The first bytes of file types people often upload by mistake, with advice.
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
_UNREADABLE_MESSAGE = (
    "This file is not an image ConvViz can read (allowed: "
    f"{_ALLOWED_FORMATS_TEXT}). Upload a photo in one of these formats."
)


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedImage:
    """An uploaded image, decoded to RGB, with what was done to get there.

    Equality is identity (`eq=False`): comparing two arrays element-wise has no
    single truth value.

    Attributes:
        pixels: The first frame, upright and with transparency composited on
            white, as a C-contiguous `uint8` array of shape (height, width, 3).
        format: Pillow's name for the file format, e.g. "JPEG", "PNG", "GIF",
            "WEBP", "TIFF", or "MPO" (a JPEG from a camera that stores extra
            pictures after the main one).
        frame_count: How many frames (or TIFF pages) the file holds; only the
            first one is in `pixels`.
        was_animated: True when the file is an animation (GIF, WebP or PNG
            with more than one frame) and only its first frame is shown.
        original_mode: Pillow's mode of the stored image, e.g. "RGB", "P",
            "CMYK", "I;16" or "F".
        notes: Remarks for the user, e.g.
            "Animated GIF: showing the first of 12 frames."
    """

    pixels: np.ndarray
    format: str
    frame_count: int
    was_animated: bool
    original_mode: str
    notes: tuple[str, ...] = ()


def load_image(source) -> np.ndarray:
    """Decodes an image file to an RGB array.

    Args:
        source: The file, as `bytes` (or `bytearray` / `memoryview`), a path
            (`str` or `os.PathLike`), or a binary file-like object such as
            Streamlit's `UploadedFile` or `io.BytesIO`.

    Returns:
        A C-contiguous `uint8` array of shape (height, width, 3); see
        `load_image_info` for what is done to the file's pixels.

    Raises:
        InputError: If the file is not an image ConvViz can read, or breaks one
            of the limits described in this module's docstring.
        TypeError: If `source` is none of the kinds above.
    """
    return load_image_info(source).pixels


def load_image_info(source, draft_side=None) -> LoadedImage:
    """Decodes an image file to RGB and reports how it was converted.

    The first frame of an animation (or the first page of a TIFF) is used.
    The EXIF orientation is applied, so phone photos show upright. Transparent
    pixels are composited on white. 16-bit images are scaled to 8 bits
    (65535 becomes 255). 32-bit integer images are stretched so their smallest
    value is black and their largest white; floating-point images are scaled
    by 255 when all values lie in 0..1 and stretched the same way otherwise,
    with NaN and infinite pixels black.

    A seekable file-like source is read from its start, as Pillow does, and its
    position is restored afterwards; it is never closed.

    Args:
        source: The file, as `bytes` (or `bytearray` / `memoryview`), a path
            (`str` or `os.PathLike`), or a binary file-like object such as
            Streamlit's `UploadedFile` or `io.BytesIO`.
        draft_side: For a caller that shrinks the image to a longer side of
            this anyway (`fit_within`): a large JPEG is then decoded at the
            smallest of 1/2, 1/4 or 1/8 of its size whose longer side stays
            at least this (libjpeg's DCT scaling, several times faster than a
            full decode of a phone photo). Other formats decode in full.

    Returns:
        A `LoadedImage`.

    Raises:
        InputError: If the file is not an image ConvViz can read, or breaks one
            of the limits described in this module's docstring.
        TypeError: If `source` is none of the kinds above.
    """
    data = _read_source(source)
    if not data:
        raise InputError("The file is empty (0 bytes). Upload an image file.")

    # `formats` keeps every decoder but the allowed ones away from the data.
    # Pillow checks its own, higher, decompression-bomb limit inside `open`.
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.UnidentifiedImageError:
        raise InputError(_describe_unreadable(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(_describe_bomb()) from None
    except _DECODE_ERRORS:
        raise InputError(_describe_broken("image")) from None

    with image:
        format_name = image.format or "image"
        original_mode = image.mode
        # The size comes from the header (for a GIF, widened by `open` to any
        # first frame that reaches past the canvas); checking it before `load`
        # means a small file that declares a huge image is never decoded.
        _check_size(*image.size)
        try:
            frame_count = getattr(image, "n_frames", 1)
            image.seek(0)
            if draft_side is not None and format_name in ("JPEG", "MPO"):
                width, height = image.size
                scale = min(1.0, draft_side / max(width, height))
                # Pillow picks the smallest scale whose size is at least the one asked for.
                image.draft(image.mode, (max(1, round(width * scale)), max(1, round(height * scale))))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(_describe_bomb()) from None
        except _DECODE_ERRORS:
            raise InputError(_describe_broken(format_name)) from None

        notes = []
        upright, orientation_note = _apply_exif_orientation(image)
        if orientation_note:
            notes.append(orientation_note)
        pixels, conversion_notes = _convert_to_rgb_array(upright)
        notes.extend(conversion_notes)

    was_animated = frame_count > 1 and format_name in _ANIMATED_FORMATS
    if was_animated:
        notes.insert(
            0,
            f"Animated {_display_name(format_name)}: showing the first of "
            f"{frame_count} frames.",
        )
    elif frame_count > 1 and format_name == "TIFF":
        notes.insert(0, f"Multi-page TIFF: showing the first of {frame_count} pages.")

    return LoadedImage(
        pixels=pixels,
        format=format_name,
        frame_count=frame_count,
        was_animated=was_animated,
        original_mode=original_mode,
        notes=tuple(notes),
    )


def check_rgb_image(image) -> np.ndarray:
    """Checks that an array is one RGB uint8 image, as the views take it.

    Args:
        image: Anything array-like.

    Returns:
        `image` as a numpy array (not copied).

    Raises:
        InputError: If it is not a uint8 array of shape (height, width, 3).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(
            f"Expected an RGB uint8 image of shape (height, width, 3), received "
            f"dtype={image.dtype}, shape={image.shape}. Load images with load_image()."
        )
    return image


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes an RGB image to a given (height, width).

    Each axis that shrinks is resized with area averaging (`cv2.INTER_AREA`),
    which does not alias; each axis that grows is resized with bilinear
    interpolation (`cv2.INTER_LINEAR`, as Keras's `Resizing` layer does by
    default), which does not overshoot. When one axis shrinks and the other
    grows, the two are done one after the other, because OpenCV's area mode
    falls back to a bilinear-like filter as soon as any axis grows.

    Args:
        image: A `uint8` array of shape (height, width, 3). It is not changed.
        size: The new (height, width), in that order (OpenCV's `dsize` is
            (width, height)), as positive integers.

    Returns:
        A new C-contiguous `uint8` array of shape (height, width, 3), even when
        the size does not change.

    Raises:
        TypeError: If `image` is not a numpy array.
        ValueError: If `image` is not RGB `uint8`, or `size` is not two
            positive integers.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(
            "image must be a numpy array of shape (height, width, 3). "
            f"Received: image of type {type(image).__name__}"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            "image must be a uint8 array of shape (height, width, 3). "
            f"Received: image with shape={image.shape}, dtype={image.dtype}"
        )
    target_height, target_width = _parse_size(size)
    height, width = image.shape[:2]

    if (target_height, target_width) == (height, width):
        return np.array(image, dtype=np.uint8, order="C", copy=True)
    # OpenCV cannot read arrays with negative strides (e.g. `image[::-1]`).
    result = np.ascontiguousarray(image)
    if target_height < height or target_width < width:
        result = cv2.resize(
            result,
            (min(width, target_width), min(height, target_height)),
            interpolation=cv2.INTER_AREA,
        )
    if target_height > height or target_width > width:
        result = cv2.resize(
            result, (target_width, target_height), interpolation=cv2.INTER_LINEAR
        )
    return result


def fit_within(image, max_side=MAX_WORKING_SIDE):
    """Shrinks an RGB image so its longer side is at most `max_side`, keeping its shape.

    Returns:
        The image itself when it already fits, else a resized copy.
    """
    height, width = image.shape[:2]
    longer = max(height, width)
    if longer <= max_side:
        return image
    scale = max_side / longer
    return resize_to(image, (max(1, round(height * scale)), max(1, round(width * scale))))


def _parse_size(size) -> tuple[int, int]:
    """Checks a (height, width) pair and returns it as Python ints."""
    try:
        height, width = size
    except (TypeError, ValueError):
        raise ValueError(
            f"size must be a (height, width) pair. Received: size={size!r}"
        ) from None
    for value in (height, width):
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, np.integer))
            or value < 1
        ):
            raise ValueError(
                "size must be a (height, width) pair of positive integers. "
                f"Received: size={size!r}"
            )
    return int(height), int(width)


def _read_source(source) -> bytes:
    """Reads at most `MAX_FILE_BYTES` bytes from any supported source.

    Raises:
        InputError: If the source is larger than `MAX_FILE_BYTES` or a path
            cannot be read.
        TypeError: If the source is of an unsupported kind.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        if view.nbytes > MAX_FILE_BYTES:
            raise InputError(_describe_too_large())
        return view.tobytes() if not isinstance(source, bytes) else source

    if isinstance(source, (str, os.PathLike)):
        return _read_path(source)

    if callable(getattr(source, "read", None)):
        return _read_file_object(source)

    raise TypeError(
        "source must be bytes, a path (str or os.PathLike) or a binary file-like "
        f"object. Received: source of type {type(source).__name__}"
    )


def _read_path(path) -> bytes:
    """Reads a file by path, refusing it early when it is too large."""
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            raise InputError(_describe_too_large())
        with open(path, "rb") as file:
            # Special files such as pipes report size 0 but may be endless,
            # so the read is bounded whatever `stat` said.
            data = _read_at_most(file, MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(
            f"There is no file at {os.fspath(path)!r}. Check the path."
        ) from None
    except IsADirectoryError:
        raise InputError(
            f"{os.fspath(path)!r} is a folder, not an image file. Choose an image file."
        ) from None
    except OSError as error:
        raise InputError(
            f"ConvViz could not read {os.fspath(path)!r} ({error.strerror or error}). "
            "Check that the file exists and can be read."
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(_describe_too_large())
    return data


def _read_file_object(file) -> bytes:
    """Reads a binary file-like object from its start, restoring its position."""
    position = None
    try:
        if file.seekable():
            position = file.tell()
            file.seek(0)
    except (AttributeError, OSError):
        # Objects without `seekable`, or that fail to seek, are read from where
        # they are, like a pipe.
        position = None
    try:
        data = _read_at_most(file, MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InputError(
            f"ConvViz could not read the uploaded file ({error}). Upload it again."
        ) from None
    finally:
        if position is not None:
            file.seek(position)
    if isinstance(data, str):
        raise TypeError(
            "source must be opened in binary mode ('rb'). "
            "Received: a text file object"
        )
    if len(data) > MAX_FILE_BYTES:
        raise InputError(_describe_too_large())
    return data


def _read_at_most(file, limit: int) -> bytes:
    """Reads up to `limit` bytes, looping because raw streams return short reads."""
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = file.read(remaining)
        if not chunk:
            break
        if isinstance(chunk, str):
            return chunk
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _check_size(width: int, height: int) -> None:
    """Refuses images that are too large, too small or too elongated."""
    pixels = width * height
    if pixels > MAX_PIXELS:
        raise InputError(
            f"The image is {width}×{height} pixels ({_megapixels(pixels)} "
            f"megapixels); the limit is {_megapixels(MAX_PIXELS)} megapixels. "
            "Resize it and upload it again."
        )
    if min(width, height) < MIN_SIDE_PIXELS:
        raise InputError(
            f"The image is {width}×{height} pixels; ConvViz needs at least "
            f"{MIN_SIDE_PIXELS} pixels on each side, because a smaller image "
            "shows nothing once it is enlarged to a model's input size. "
            "Upload a larger image."
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        longer, shorter = ("wider", "tall") if width > height else ("taller", "wide")
        raise InputError(
            f"The image is {width}×{height} pixels, {ratio:.0f} times {longer} "
            f"than it is {shorter}; ConvViz accepts shapes up to "
            f"{MAX_ASPECT_RATIO}:1, because a longer strip is squeezed past "
            "recognition when resized to a model's square input. Crop it closer "
            "to a square and upload it again."
        )


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, str | None]:
    """Turns a photo upright following its EXIF orientation tag.

    Pillow's `ImageOps.exif_transpose` also rewrites the EXIF block, which can
    fail on odd metadata; only the pixels matter here.

    Returns:
        The upright image (the same object when no turn is needed) and a note
        for the user when the tag could not be read.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return image, (
            "The photo's orientation tag could not be read; it is shown as stored."
        )
    if not isinstance(orientation, int):
        return image, None
    method = _ORIENTATION_TRANSPOSES.get(orientation)
    if method is None:
        return image, None
    return image.transpose(method), None


def _convert_to_rgb_array(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Converts a decoded image of any mode to a C-contiguous RGB uint8 array.

    Returns:
        The array and notes for the user about the conversion.

    Raises:
        InputError: If Pillow cannot convert the image's mode to RGB.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint32)
        # Rounds value / 257 in integers, so 65535 -> 255 and 32768 -> 128.
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return _gray_to_rgb(gray), []
    if mode == "I":
        gray = _stretch_to_8_bits(np.asarray(image))
        note = (
            "32-bit image: brightness stretched so its darkest pixel is black and "
            "its brightest white."
        )
        return _gray_to_rgb(gray), [note]
    if mode == "F":
        values = np.asarray(image)
        finite_values = values[np.isfinite(values)]
        if finite_values.size and finite_values.min() >= 0 and finite_values.max() <= 1:
            gray = _scale_unit_floats(values)
            return _gray_to_rgb(gray), []
        note = (
            "Floating-point image: brightness stretched so its darkest pixel is "
            "black and its brightest white."
        )
        return _gray_to_rgb(_stretch_to_8_bits(values)), [note]

    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        rgb = rgba.convert("RGB")
        if alpha.getextrema()[0] == 255:
            return np.array(rgb, dtype=np.uint8), []
        background = Image.new("RGB", rgba.size, BACKGROUND_COLOR)
        background.paste(rgb, mask=alpha)
        return np.array(background, dtype=np.uint8), [
            "Transparent areas are shown on a white background."
        ]

    if mode == "RGB":
        return np.array(image, dtype=np.uint8), []
    try:
        rgb = image.convert("RGB")
    except ValueError:
        raise InputError(
            f"ConvViz cannot convert images in colour mode {mode} to RGB. Save it "
            "as an RGB JPEG or PNG and upload it again."
        ) from None
    return np.array(rgb, dtype=np.uint8), []


def _scale_unit_floats(values: np.ndarray) -> np.ndarray:
    """Maps floats in 0..1 to 0..255; NaN and infinite values become 0."""
    finite = np.isfinite(values)
    scaled = np.where(finite, values, 0).astype(np.float32) * 255
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _stretch_to_8_bits(values: np.ndarray) -> np.ndarray:
    """Maps the smallest finite value to 0 and the largest to 255.

    An image with a single value becomes black. NaN and infinite values
    become 0.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low = float(values[finite].min())
    high = float(values[finite].max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scale = 255.0 / (high - low)
    # Float32 keeps a 40-megapixel image at 160 MB per temporary. An overflow
    # can only reach +inf for values near the top of the range, which the
    # clip turns into 255, so it is silenced instead of warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(scale)
        scaled = np.where(finite, np.clip(scaled, 0, 255), 0)
    return np.rint(scaled).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Repeats a (height, width) array into a C-contiguous (height, width, 3) one."""
    return np.ascontiguousarray(np.repeat(gray[:, :, np.newaxis], 3, axis=2))


def _display_name(format_name: str) -> str:
    return _FORMAT_DISPLAY_NAMES.get(format_name, format_name)


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.3g}"


def _describe_too_large() -> str:
    limit = f"{MAX_FILE_BYTES / (1024 * 1024):.0f} MB"
    return (
        f"The file is larger than {limit}, the most ConvViz accepts. Save it as "
        "a JPEG or make it smaller, and upload it again."
    )


def _describe_bomb() -> str:
    return (
        "The image is far larger than the limit of "
        f"{_megapixels(MAX_PIXELS)} megapixels. Resize it and upload it again."
    )


def _describe_broken(format_name: str) -> str:
    return (
        f"ConvViz could not decode this {_display_name(format_name)} file: it looks "
        "damaged or incomplete (for example, cut off during upload). Open it in an "
        "image editor, save it again as JPEG or PNG, and upload that."
    )


def _describe_unreadable(data: bytes) -> str:
    """Explains why a file is not readable, naming common mistakes."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return (
            "This is a HEIC/HEIF or AVIF photo, which ConvViz cannot read (allowed: "
            f"{_ALLOWED_FORMATS_TEXT}). Export it as JPEG (on an iPhone: Settings > "
            "Camera > Formats > Most Compatible) and upload it again."
        )
    if b"<svg" in data[:4096].lower():
        return (
            "This is an SVG drawing, which ConvViz cannot read (allowed: "
            f"{_ALLOWED_FORMATS_TEXT}). Export it as PNG and upload that."
        )
    return _UNREADABLE_MESSAGE

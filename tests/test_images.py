"""Tests for `convviz_core.inputs.images`: every kind of upload, friendly or hostile.

Each input is generated in the test that uses it. Expected pixels are worked
out here from the rules documented in `convviz_core/inputs/images.py`.
"""

import dataclasses
import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import ExifTags
from PIL import Image

from convviz_core.inputs import images
from convviz_core.errors import InputError

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(image: Image.Image, file_format: str, **options) -> bytes:
    """Saves a Pillow image to bytes in the given format."""
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def composite_on_white(channel: int, alpha: int) -> int:
    """One channel of a pixel with the given alpha laid over white."""
    return round(channel * alpha / 255 + 255 * (1 - alpha / 255))


def make_png_header(width: int, height: int) -> bytes:
    """A valid, tiny PNG that declares any size: the shape of a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)

    # Bit depth 1, grayscale, so the declared size costs nothing to write.
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def make_oriented_jpeg(orientation: int) -> bytes:
    """A 48×32 blue JPEG with a red 16×16 block in its stored top-left corner."""
    image = Image.new("RGB", (48, 32), BLUE)
    image.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95, subsampling=0)


def make_reference_png() -> bytes:
    """A 16×12 RGB PNG: red everywhere but a green top-right pixel."""
    image = Image.new("RGB", (16, 12), RED)
    image.putpixel((15, 0), GREEN)
    return encode(image, "PNG")


REFERENCE_PIXELS = {(0, 0): RED, (0, 15): GREEN, (11, 15): RED}


def make_cmyk_jpeg() -> bytes:
    """Pure cyan on the left, 50% black on the right."""
    image = Image.new("CMYK", (32, 16), (255, 0, 0, 0))
    image.paste((0, 0, 0, 128), (16, 0, 32, 16))
    return encode(image, "JPEG", quality=95)


def make_palette_png(transparency=None) -> bytes:
    """Columns of palette index 0 (blue), 1 (red) and 2 (red) on an 8-row image."""
    image = Image.new("P", (24, 8), 0)
    image.putpalette(list(BLUE) + list(RED) + list(RED))
    image.paste(1, (8, 0, 16, 8))
    image.paste(2, (16, 0, 24, 8))
    options = {} if transparency is None else {"transparency": transparency}
    return encode(image, "PNG", **options)


def make_rgba_png() -> bytes:
    """Columns of red at alpha 0, 128, 255 and green at alpha 64."""
    image = Image.new("RGBA", (32, 8))
    for column, color in enumerate([(*RED, 0), (*RED, 128), (*RED, 255), (*GREEN, 64)]):
        image.paste(color, (column * 8, 0, column * 8 + 8, 8))
    return encode(image, "PNG")


def make_la_png() -> bytes:
    """Columns of (gray, alpha): (0, 0), (0, 128), (200, 255)."""
    image = Image.new("LA", (24, 8))
    for column, color in enumerate([(0, 0), (0, 128), (200, 255)]):
        image.paste(color, (column * 8, 0, column * 8 + 8, 8))
    return encode(image, "PNG")


def make_gray_image(values, dtype, file_format: str) -> bytes:
    """A grayscale image of one row of `values`, repeated to 8 rows and 8 px wide."""
    row = np.repeat(np.array(values, dtype=dtype), 8)
    return encode(Image.fromarray(np.tile(row, (8, 1))), file_format)


def gray_columns(values) -> dict:
    """Expected pixels in the middle of each 8-pixel column of `make_gray_image`."""
    return {(4, 8 * index + 4): (value,) * 3 for index, value in enumerate(values)}


def make_one_bit_png() -> bytes:
    """Black on the left half, white on the right half."""
    image = Image.new("1", (16, 8), 0)
    image.paste(1, (8, 0, 16, 8))
    return encode(image, "PNG")


def make_frames(colors) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), color) for color in colors]


def make_animation(file_format: str, **options) -> bytes:
    first, *rest = make_frames([RED, GREEN, BLUE])
    return encode(first, file_format, save_all=True, append_images=rest, **options)


def make_multipage_tiff() -> bytes:
    first, *rest = make_frames([RED, GREEN])
    return encode(first, "TIFF", save_all=True, append_images=rest)


def make_jpeg(width: int = 64, height: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "JPEG", quality=90)


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def write_sparse_file(tmp_path: Path, size: int) -> Path:
    """A file of `size` zero bytes that takes no room on disk."""
    path = tmp_path / "huge.png"
    with open(path, "wb") as file:
        file.truncate(size)
    return path


class NonSeekableStream:
    """A pipe-like source: only `read`, and short reads of at most 100 bytes."""

    def __init__(self, data: bytes):
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(min(size, 100) if size >= 0 else 100)


class EndlessStream:
    """A source that never ends, counting the bytes handed out."""

    def __init__(self):
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = b"\0" * min(size if size >= 0 else 1 << 20, 1 << 20)
        self.bytes_read += len(chunk)
        return chunk


def make_positioned_bytes_io(_) -> io.BytesIO:
    stream = io.BytesIO(make_reference_png())
    stream.seek(5)
    return stream


def check_position_kept(source) -> None:
    assert not source.closed
    assert source.tell() == 5


def check_open_file_kept(source) -> None:
    assert not source.closed
    assert source.tell() == 3


def open_file_at_three(tmp_path: Path):
    file = open(write_file(tmp_path, "photo.png", make_reference_png()), "rb")
    file.seek(3)
    return file


def check_bytearray_unchanged(source) -> None:
    assert bytes(source) == make_reference_png()


def check_stream_bounded(source) -> None:
    assert source.bytes_read <= images.MAX_FILE_BYTES + 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One input for `load_image_info` and what it must give.

    Either `error` is set (with a phrase the message must contain), or the
    output must have `shape` and the listed `pixels` (row, column) -> RGB,
    within `tolerance` per channel (JPEG is lossy; lossless formats use 0).
    """

    name: str
    make_source: Callable[[Path], Any]
    shape: tuple[int, int] | None = None
    pixels: dict | None = None
    tolerance: int = 0
    error: type | None = None
    phrase: str = ""
    format: str | None = None
    original_mode: str | None = None
    frame_count: int = 1
    was_animated: bool = False
    note: str | None = None
    check_source: Callable[[Any], None] | None = None
    rereadable: bool = True
    pillow_warning: type | None = None
    warnings_as_errors: bool = False


half_red = (255, composite_on_white(0, 128), composite_on_white(0, 128))
quarter_green = (composite_on_white(0, 64), 255, composite_on_white(0, 64))
gray_half = composite_on_white(0, 128)

CASES = [
    # Phone photos: the EXIF orientation moves the red corner.
    Case(
        "exif-orientation-6-jpeg",
        lambda _: make_oriented_jpeg(6),
        shape=(48, 32),
        pixels={(2, 29): RED, (2, 2): BLUE, (45, 29): BLUE},
        tolerance=12,
        format="JPEG",
    ),
    Case(
        "exif-orientation-8-jpeg",
        lambda _: make_oriented_jpeg(8),
        shape=(48, 32),
        pixels={(45, 2): RED, (2, 2): BLUE, (2, 29): BLUE},
        tolerance=12,
    ),
    Case(
        "exif-orientation-3-jpeg",
        lambda _: make_oriented_jpeg(3),
        shape=(32, 48),
        pixels={(29, 45): RED, (2, 2): BLUE},
        tolerance=12,
    ),
    # Colour modes.
    Case(
        "cmyk-jpeg",
        lambda _: make_cmyk_jpeg(),
        shape=(16, 32),
        pixels={(8, 4): (0, 255, 255), (8, 28): (127, 127, 127)},
        tolerance=3,
        original_mode="CMYK",
    ),
    Case(
        "palette-png",
        lambda _: make_palette_png(),
        shape=(8, 24),
        pixels={(4, 4): BLUE, (4, 12): RED, (4, 20): RED},
        original_mode="P",
    ),
    Case(
        "palette-png-transparent-index",
        lambda _: make_palette_png(transparency=1),
        shape=(8, 24),
        pixels={(4, 4): BLUE, (4, 12): WHITE, (4, 20): RED},
        note="white background",
    ),
    Case(
        "palette-png-partial-transparency",
        lambda _: make_palette_png(transparency=bytes([255, 0, 128])),
        shape=(8, 24),
        pixels={(4, 4): BLUE, (4, 12): WHITE, (4, 20): half_red},
    ),
    Case(
        "rgba-png-on-white",
        lambda _: make_rgba_png(),
        shape=(8, 32),
        pixels={(4, 4): WHITE, (4, 12): half_red, (4, 20): RED, (4, 28): quarter_green},
        original_mode="RGBA",
        note="white background",
    ),
    Case(
        "la-png-on-white",
        lambda _: make_la_png(),
        shape=(8, 24),
        pixels={(4, 4): WHITE, (4, 12): (gray_half,) * 3, (4, 20): (200, 200, 200)},
        original_mode="LA",
    ),
    Case(
        "16-bit-gray-png",
        lambda _: make_gray_image([0, 257, 32768, 65535], np.uint16, "PNG"),
        shape=(8, 32),
        pixels=gray_columns([0, 1, 128, 255]),
        original_mode="I;16",
    ),
    Case(
        "16-bit-gray-tiff",
        lambda _: make_gray_image([0, 32768, 65535], np.uint16, "TIFF"),
        shape=(8, 24),
        pixels=gray_columns([0, 128, 255]),
    ),
    Case(
        "1-bit-png",
        lambda _: make_one_bit_png(),
        shape=(8, 16),
        pixels={(4, 4): (0, 0, 0), (4, 12): WHITE},
        original_mode="1",
    ),
    Case(
        "float-tiff-in-unit-range",
        lambda _: make_gray_image([0.0, 0.25, 0.5, 1.0, np.nan], np.float32, "TIFF"),
        shape=(8, 40),
        # 0.25 × 255 = 63.75 rounds to 64; 0.5 × 255 = 127.5 rounds to even 128.
        pixels=gray_columns([0, 64, 128, 255, 0]),
        original_mode="F",
    ),
    Case(
        "float-tiff-stretched",
        lambda _: make_gray_image([-1.0, 0.0, 3.0, np.inf], np.float32, "TIFF"),
        shape=(8, 32),
        # (0 - -1) × 255 / (3 - -1) = 63.75 rounds to 64; infinity is black.
        pixels=gray_columns([0, 64, 255, 0]),
        note="stretched",
    ),
    Case(
        "int32-tiff-stretched",
        lambda _: make_gray_image([-1000, 600, 1000], np.int32, "TIFF"),
        shape=(8, 24),
        # (600 - -1000) × 255 / 2000 = 204.
        pixels=gray_columns([0, 204, 255]),
        original_mode="I",
        note="stretched",
    ),
    # Several frames: the first one is shown.
    Case(
        "animated-gif",
        lambda _: make_animation("GIF", duration=100, loop=0),
        shape=(16, 16),
        pixels={(8, 8): RED},
        format="GIF",
        frame_count=3,
        was_animated=True,
        note="Animated GIF: showing the first of 3 frames.",
    ),
    Case(
        "animated-webp",
        lambda _: make_animation("WEBP", duration=100, lossless=True),
        shape=(16, 16),
        pixels={(8, 8): RED},
        format="WEBP",
        frame_count=3,
        was_animated=True,
        note="Animated WebP: showing the first of 3 frames.",
    ),
    Case(
        "animated-png",
        lambda _: make_animation("PNG", duration=100),
        shape=(16, 16),
        pixels={(8, 8): RED},
        frame_count=3,
        was_animated=True,
        note="Animated PNG: showing the first of 3 frames.",
    ),
    Case(
        "multi-page-tiff",
        lambda _: make_multipage_tiff(),
        shape=(16, 16),
        pixels={(8, 8): RED},
        format="TIFF",
        frame_count=2,
        was_animated=False,
        note="Multi-page TIFF: showing the first of 2 pages.",
    ),
    # Every kind of source gives the same picture and is left as it was.
    Case("source-bytes", lambda _: make_reference_png(), (12, 16), REFERENCE_PIXELS),
    Case(
        "source-bytearray",
        lambda _: bytearray(make_reference_png()),
        (12, 16),
        REFERENCE_PIXELS,
        check_source=check_bytearray_unchanged,
    ),
    Case(
        "source-memoryview",
        lambda _: memoryview(make_reference_png()),
        (12, 16),
        REFERENCE_PIXELS,
    ),
    Case(
        "source-str-path",
        lambda tmp_path: str(write_file(tmp_path, "photo.png", make_reference_png())),
        (12, 16),
        REFERENCE_PIXELS,
    ),
    Case(
        "source-pathlib-path",
        lambda tmp_path: write_file(tmp_path, "photo.png", make_reference_png()),
        (12, 16),
        REFERENCE_PIXELS,
    ),
    Case(
        "source-bytes-io-read-from-start",
        make_positioned_bytes_io,
        (12, 16),
        REFERENCE_PIXELS,
        check_source=check_position_kept,
    ),
    Case(
        "source-open-binary-file",
        open_file_at_three,
        (12, 16),
        REFERENCE_PIXELS,
        check_source=check_open_file_kept,
    ),
    Case(
        "source-non-seekable-stream",
        lambda _: NonSeekableStream(make_reference_png()),
        (12, 16),
        REFERENCE_PIXELS,
        rereadable=False,
    ),
    Case(
        "source-of-wrong-type",
        lambda _: None,
        error=TypeError,
        phrase="source must be bytes, a path",
    ),
    # Hostile or broken files: each one gives an InputError that says what to do.
    Case(
        "decompression-bomb-400-megapixels",
        lambda _: make_png_header(20000, 20000),
        error=InputError,
        phrase="far larger than the limit of 40 megapixels. Resize it",
    ),
    Case(
        # Pillow itself warns above about 89 megapixels, inside `Image.open`
        # and before ConvViz sees the size; the upload is still refused.
        "decompression-bomb-100-megapixels",
        lambda _: make_png_header(10000, 10000),
        error=InputError,
        phrase="10000×10000 pixels (100 megapixels); the limit is 40 megapixels",
        pillow_warning=Image.DecompressionBombWarning,
    ),
    Case(
        "decompression-bomb-100-megapixels-warnings-as-errors",
        lambda _: make_png_header(10000, 10000),
        error=InputError,
        phrase="far larger than the limit of 40 megapixels",
        warnings_as_errors=True,
    ),
    Case(
        "over-pixel-limit-49-megapixels",
        lambda _: make_png_header(7000, 7000),
        error=InputError,
        phrase="7000×7000 pixels (49 megapixels); the limit is 40 megapixels",
    ),
    Case(
        "truncated-jpeg",
        lambda _: make_jpeg()[: len(make_jpeg()) // 2],
        error=InputError,
        phrase="could not decode this JPEG file: it looks damaged or incomplete",
    ),
    Case(
        "truncated-png",
        lambda _: make_reference_png()[:-30],
        error=InputError,
        phrase="could not decode this PNG file",
    ),
    Case("zero-byte-file", lambda _: b"", error=InputError, phrase="The file is empty"),
    Case(
        "random-bytes",
        lambda _: np.random.default_rng(1).bytes(4096),
        error=InputError,
        phrase="ConvViz can read (allowed: JPEG, PNG, WebP, BMP, GIF, TIFF)",
    ),
    Case(
        "text-file-named-png",
        lambda tmp_path: write_file(tmp_path, "notes.png", b"Buy eggs and milk.\n"),
        error=InputError,
        phrase="not an image ConvViz can read",
    ),
    Case(
        "svg-drawing",
        lambda _: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
        b'width="10" height="10"><rect width="10" height="10"/></svg>',
        error=InputError,
        phrase="SVG drawing, which ConvViz cannot read",
    ),
    Case(
        "heic-photo",
        lambda _: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64,
        error=InputError,
        phrase="HEIC/HEIF or AVIF photo",
    ),
    Case(
        "format-pillow-reads-but-not-allowed",
        lambda _: encode(Image.new("RGB", (16, 16), RED), "PPM"),
        error=InputError,
        phrase="not an image ConvViz can read",
    ),
    Case(
        "one-pixel-image",
        lambda _: encode(Image.new("RGB", (1, 1), RED), "PNG"),
        error=InputError,
        phrase="1×1 pixels; ConvViz needs at least 8 pixels on each side",
    ),
    Case(
        "strip-10000-by-10",
        lambda _: encode(Image.new("RGB", (10000, 10), RED), "PNG"),
        error=InputError,
        phrase="10000×10 pixels, 1000 times wider than it is tall",
    ),
    Case(
        "strip-10-by-600",
        lambda _: encode(Image.new("RGB", (10, 600), RED), "PNG"),
        error=InputError,
        phrase="60 times taller than it is wide; ConvViz accepts shapes up to 50:1",
    ),
    Case(
        "panorama-within-aspect-limit",
        lambda _: encode(Image.new("RGB", (500, 10), RED), "PNG"),
        shape=(10, 500),
        pixels={(5, 499): RED},
    ),
    Case(
        "too-large-bytes",
        lambda _: bytes(images.MAX_FILE_BYTES + 1),
        error=InputError,
        phrase="larger than 50 MB",
    ),
    Case(
        "too-large-endless-stream",
        lambda _: EndlessStream(),
        error=InputError,
        phrase="larger than 50 MB",
        check_source=check_stream_bounded,
    ),
    Case(
        "too-large-file-on-disk",
        lambda tmp_path: write_sparse_file(tmp_path, images.MAX_FILE_BYTES + 1),
        error=InputError,
        phrase="larger than 50 MB",
    ),
    Case(
        "missing-path",
        lambda tmp_path: tmp_path / "missing.png",
        error=InputError,
        phrase="There is no file at",
    ),
]


def load_recording_warnings(case: Case, source):
    """Runs `load_image_info`, returning its result (or error) and all warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error" if case.warnings_as_errors else "always")
        try:
            return images.load_image_info(source), None, caught
        except Exception as error:  # The caller checks the exact type.
            return None, error, caught


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_load_image_info(case: Case, tmp_path: Path):
    source = case.make_source(tmp_path)
    try:
        loaded, error, caught = load_recording_warnings(case, source)
        expected_warnings = [case.pillow_warning] if case.pillow_warning else []
        assert [warning.category for warning in caught] == expected_warnings

        if case.error is not None:
            assert type(error) is case.error, f"expected {case.error}, got {error!r}"
            assert case.phrase in str(error)
            if case.error is InputError:
                # The message is shown as is: no Pillow or Python internals.
                assert error.__cause__ is None
                assert error.__context__ is None or error.__suppress_context__
                assert "PIL" not in str(error) and "Errno" not in str(error)
        else:
            assert error is None, f"unexpected {error!r}"
            pixels = loaded.pixels
            assert pixels.dtype == np.uint8
            assert pixels.shape == (*case.shape, 3)
            assert pixels.flags.c_contiguous and pixels.flags.writeable
            for (row, column), expected in case.pixels.items():
                actual = pixels[row, column].astype(int)
                difference = np.abs(actual - np.array(expected))
                assert difference.max() <= case.tolerance, (
                    f"pixel {(row, column)} is {tuple(actual)}, expected {expected}"
                )
            assert loaded.frame_count == case.frame_count
            assert loaded.was_animated is case.was_animated
            if case.format is not None:
                assert loaded.format == case.format
            if case.original_mode is not None:
                assert loaded.original_mode == case.original_mode
            if case.note is None:
                assert not any("first of" in note for note in loaded.notes)
            else:
                assert any(case.note in note for note in loaded.notes), loaded.notes
            if case.rereadable:
                np.testing.assert_array_equal(images.load_image(source), pixels)

        if case.check_source is not None:
            case.check_source(source)
    finally:
        if hasattr(source, "close"):
            source.close()


def ramp(rows, columns) -> np.ndarray:
    """A (rows, columns, 3) uint8 array with every value distinct-ish."""
    values = np.arange(rows * columns * 3) % 251
    return values.reshape(rows, columns, 3).astype(np.uint8)


def gray_rows(values) -> np.ndarray:
    """A one-column RGB image whose rows have the given gray values."""
    column = np.array(values, dtype=np.uint8)[:, np.newaxis, np.newaxis]
    return np.repeat(column, 3, axis=2)


def quadrants() -> np.ndarray:
    """A 4×4 image of four 2×2 blocks: red, green / blue, white."""
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:2, :2], image[:2, 2:], image[2:, :2], image[2:, 2:] = RED, GREEN, BLUE, WHITE
    return image


def linear_enlargement_of_0_and_255() -> np.ndarray:
    # OpenCV samples output pixel x at source position (x + 0.5) / 2 - 0.5,
    # clamped to the edges: 0, 0.25, 0.75, 1.
    return np.array([round(255 * position) for position in (0, 0.25, 0.75, 1)])


RESIZE_CASES = [
    # (name, image, size, expected image or None, error type, phrase)
    ("shrink-blocks-exactly", quadrants(), (2, 2),
     np.array([[RED, GREEN], [BLUE, WHITE]], dtype=np.uint8), None, ""),
    # Area averaging sees every row; sampling would pick rows 1 and 4 (90, 0).
    ("shrink-averages-area", gray_rows([0, 90, 0, 0, 0, 90]), (2, 1),
     gray_rows([30, 30]), None, ""),
    # Rows shrink by averaging while the width doubles.
    ("shrink-one-axis-enlarge-other", gray_rows([0, 90, 0, 0, 0, 90]), (2, 2),
     np.repeat(gray_rows([30, 30]), 2, axis=1), None, ""),
    ("enlarge-linear", np.array([[[0] * 3, [255] * 3]], dtype=np.uint8), (1, 4),
     np.repeat(linear_enlargement_of_0_and_255()[np.newaxis, :, np.newaxis], 3, axis=2)
     .astype(np.uint8), None, ""),
    ("same-size-is-a-copy", ramp(5, 7), (5, 7), ramp(5, 7), None, ""),
    ("reversed-view-input", ramp(6, 4)[::-1], (3, 2), None, None, ""),
    ("numpy-integer-size", ramp(6, 4), (np.int64(3), np.int32(8)), None, None, ""),
    ("float-image", ramp(4, 4).astype(np.float32), (2, 2), None, ValueError,
     "Received: image with shape=(4, 4, 3), dtype=float32"),
    ("gray-image", ramp(4, 4)[:, :, 0], (2, 2), None, ValueError, "shape=(4, 4)"),
    ("not-an-array", [[1, 2]], (2, 2), None, TypeError, "image of type list"),
    ("zero-height", ramp(4, 4), (0, 4), None, ValueError, "Received: size=(0, 4)"),
    ("one-number-size", ramp(4, 4), (4,), None, ValueError, "Received: size=(4,)"),
    ("bool-size", ramp(4, 4), (True, 4), None, ValueError, "positive integers"),
]


@pytest.mark.parametrize(
    "name, image, size, expected, error, phrase",
    RESIZE_CASES,
    ids=[case[0] for case in RESIZE_CASES],
)
def test_resize_to(name, image, size, expected, error, phrase):
    if error is not None:
        with pytest.raises(error) as raised:
            images.resize_to(image, size)
        assert type(raised.value) is error
        assert phrase in str(raised.value)
        return
    original = image.copy()
    resized = images.resize_to(image, size)
    np.testing.assert_array_equal(image, original)
    assert resized is not image and not np.shares_memory(resized, image)
    assert resized.dtype == np.uint8 and resized.flags.c_contiguous
    assert resized.shape == (int(size[0]), int(size[1]), 3)
    if expected is not None:
        np.testing.assert_array_equal(resized, expected)

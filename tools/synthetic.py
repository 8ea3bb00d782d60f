"""A seeded, procedurally drawn two-class image set for the book's small convnet.

The book's §5.2 trains a small convnet from scratch on photos of cats and
dogs, and §5.4 visualises what it learned. Those photos are not available
offline, so ConvViz trains the same architecture on images drawn here instead:
one object per image -- a disc (class 0) or a cross (class 1) -- at a random
position, size, rotation and colour, lit by a soft brightness gradient, on a
textured background (smooth colour noise, a colour gradient, stripes or a
checkerboard) with translucent clutter (small triangles, line segments, dots
and arcs) and sensor grain. Only the object decides the class, and its
bounding box is returned so that a saliency method can be scored on whether it
points at it. For training, some objects can be replaced by decoys (bars,
L and T shapes, broken crosses, squares, triangles, or nothing) that belong
to neither class.

Discs and crosses are easy to tell apart for a person but not from colour or
texture alone: a convnet has to combine edges into curved outlines, corners
and arms, which is the story §5.4 tells about its layers.
"""

import colorsys
import math

import cv2
import numpy as np

SHAPE_CLASS_NAMES = ["disc", "cross"]
# The label of a decoy image: a bar, an L, a T, a broken cross, a square, a
# triangle, or nothing.
DECOY_LABEL = -1

# cv2 draws with sub-pixel precision when coordinates are integers scaled by
# 2 ** _DRAW_SHIFT; this keeps small shapes round instead of pixel-snapped.
_DRAW_SHIFT = 4
_DRAW_SCALE = 1 << _DRAW_SHIFT

# The object's colour must differ this much (Euclidean distance in 0..255 RGB)
# from the background under it, so that every image has a visible object.
_MIN_OBJECT_CONTRAST = 110.0
_MIN_SIZE = 64
# Objects stay within this fraction of the image size from its centre. The
# book's convnet never sees the last 8 pixel rows and columns through its last
# pooling layer ('valid' convolutions, then 2×2 pooling of an odd 15×15 map),
# and objects hugging the border are mostly outside the receptive fields of
# its outermost features, so they would test the architecture's blind spots
# rather than what it learned about shapes.
_MAX_CENTRE_OFFSET = 0.3


def make_shapes_dataset(count, seed, size=150, position_spread=1.0, decoy_fraction=0.0):
    """Draws a seeded set of disc / cross images with their bounding boxes.

    Image `i` depends only on `(seed, i)`, so the first `k` images of a set
    are the same whatever `count` is, and two different seeds give
    independent sets (use a seed for held-out data that training never used).

    Args:
        count: Number of images, at least 0.
        seed: Non-negative integer seed.
        size: Height and width of the square images in pixels, at least 64.
            The object sizes scale with it; the book's convnet uses 150.
        position_spread: How far from the image centre objects may be, from
            0 (always centred) to 1 (anywhere they fit inside the image). A
            training curriculum can start with centred objects: the book's
            convnet ends in a Dense layer that must learn every position
            separately, and learns shapes much faster at one position first.
        decoy_fraction: The expected fraction of images whose object is a
            decoy -- a filled bar, L, T, broken cross, square or triangle, or
            no object at all, labelled `DECOY_LABEL` -- instead of a disc or a cross. For training only: a two-class
            network can otherwise call everything that is not a disc a cross,
            and then has no evidence for crosses on the cross itself (its
            Grad-CAM for crosses lights up the background). Taught to answer
            0.5 for decoys, it needs evidence on the object for both classes.

    Returns:
        A tuple `(images, labels, boxes)`:
        - `images`: uint8 array of shape `(count, size, size, 3)`, RGB.
        - `labels`: int64 array of shape `(count,)`, indices into
          `SHAPE_CLASS_NAMES` (0 = disc, 1 = cross), or `DECOY_LABEL`.
        - `boxes`: int64 array of shape `(count, 4)`, the object's
          `(top, left, bottom, right)` in pixels, with `bottom` and `right`
          exclusive, so `images[i, top:bottom, left:right]` is the object's
          tightest enclosing crop; `(0, 0, 0, 0)` for a decoy image with no
          object.

    Raises:
        ValueError: If `count`, `seed`, `size`, `position_spread` or
            `decoy_fraction` is out of range.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"`count` must be an integer >= 0. Received: count={count!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0. Received: seed={seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < _MIN_SIZE:
        raise ValueError(
            f"`size` must be an integer >= {_MIN_SIZE}. Received: size={size!r}"
        )
    if not 0.0 <= position_spread <= 1.0:
        raise ValueError(
            "`position_spread` must be between 0 and 1. "
            f"Received: position_spread={position_spread!r}"
        )
    if not 0.0 <= decoy_fraction <= 1.0:
        raise ValueError(
            "`decoy_fraction` must be between 0 and 1. "
            f"Received: decoy_fraction={decoy_fraction!r}"
        )
    count, seed, size = int(count), int(seed), int(size)

    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.empty((count,), dtype=np.int64)
    boxes = np.empty((count, 4), dtype=np.int64)
    # The pixel grid is shared by every background, so it is built once.
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        images[index], labels[index], boxes[index] = _draw_image(
            rng, size, rows, columns, position_spread, decoy_fraction
        )
    return images, labels, boxes


def _draw_image(rng, size, rows, columns, position_spread, decoy_fraction):
    """Draws one image; returns `(image uint8 (size, size, 3), label, box)`."""
    label = int(rng.integers(len(SHAPE_CLASS_NAMES)))
    # Drawn whatever the fraction, so that a set without decoys has the same
    # discs and crosses as one with them wherever no decoy replaced them.
    if rng.uniform() < decoy_fraction:
        label = DECOY_LABEL
    canvas = _draw_background(rng, size, rows, columns)
    _draw_distractors(canvas, rng, size)

    mask = np.zeros((size, size), dtype=np.uint8)
    if label == 0:
        _draw_disc_mask(mask, rng, size, position_spread)
    elif label == 1:
        _draw_cross_mask(mask, rng, size, position_spread)
    else:
        _draw_decoy_mask(mask, rng, size, position_spread)
    image = canvas.astype(np.float32)
    box = (0, 0, 0, 0)
    if mask.any():
        box = _paint_object(image, canvas, mask, rng, size, rows, columns)
    # Uniform grain with a random standard deviation of up to 10 grey levels;
    # uniform draws are several times cheaper than normal ones.
    grain_std = rng.uniform(0.0, 10.0)
    grain = rng.random(image.shape, dtype=np.float32) - 0.5
    image += grain * np.float32(grain_std * np.sqrt(12.0))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, label, box


def _paint_object(image, canvas, mask, rng, size, rows, columns):
    """Paints the object of `mask` into the float32 `image`; returns its box."""
    covered_rows, covered_columns = np.nonzero(mask >= 128)
    box = (
        covered_rows.min(),
        covered_columns.min(),
        covered_rows.max() + 1,
        covered_columns.max() + 1,
    )

    top, left, bottom, right = box
    under_object = canvas[top:bottom, left:right].reshape(-1, 3).mean(axis=0)
    colour = _pick_contrasting_colour(rng, under_object)
    # A soft linear brightness ramp across the object makes it look lit rather
    # than flat, so colour alone is not a perfect object detector.
    angle = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.25) / (0.5 * size)

    # Blending only where the mask is non-zero (anti-aliased edges included)
    # keeps this cheap: the object covers a small part of the image.
    touched_rows, touched_columns = np.nonzero(mask)
    region = np.s_[
        touched_rows.min():touched_rows.max() + 1,
        touched_columns.min():touched_columns.max() + 1,
    ]
    shading = 1.0 + strength * (
        math.cos(angle) * (columns[region] - 0.5 * size)
        + math.sin(angle) * (rows[region] - 0.5 * size)
    )
    alpha = mask[region].astype(np.float32)[:, :, None] / 255.0
    object_pixels = colour * shading[:, :, None]
    image[region] += alpha * (object_pixels - image[region])
    return box


def _random_colour(rng, saturation=(0.0, 1.0), value=(0.15, 1.0)):
    """Returns a random RGB colour in 0..255 as a float32 array of shape (3,)."""
    red, green, blue = colorsys.hsv_to_rgb(
        rng.uniform(0.0, 1.0), rng.uniform(*saturation), rng.uniform(*value)
    )
    return np.array([red, green, blue], dtype=np.float32) * 255.0


def _pick_contrasting_colour(rng, background_colour):
    """Returns a random object colour that stands out from `background_colour`."""
    for _ in range(30):
        colour = _random_colour(rng, saturation=(0.2, 1.0), value=(0.1, 1.0))
        if np.linalg.norm(colour - background_colour) >= _MIN_OBJECT_CONTRAST:
            return colour
    # A mid-grey background can defeat random draws; black or white then
    # always differs from it by more than the threshold.
    return np.full(3, 0.0 if background_colour.mean() > 127.5 else 255.0, dtype=np.float32)


def _draw_background(rng, size, rows, columns):
    """Returns a textured uint8 background of shape (size, size, 3), C-contiguous."""
    kind = rng.integers(4)
    first, second = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, np.pi)
    along = math.cos(angle) * columns + math.sin(angle) * rows
    if kind == 0:
        # Smooth colour noise: random colours on a coarse grid, upsampled.
        cells = int(rng.integers(3, 16))
        coarse = first[None, None, :] + rng.normal(0.0, 55.0, size=(cells, cells, 3))
        smooth = cv2.resize(
            coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
        )
        return np.clip(smooth, 0, 255).astype(np.uint8)
    if kind == 1:
        # A linear colour gradient at a random angle.
        weight = (along - along.min()) / (along.max() - along.min())
    elif kind == 2:
        # Stripes at a random angle, period and softness.
        period = rng.uniform(6.0, 40.0)
        wave = np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        weight = 0.5 + 0.5 * np.tanh(wave * rng.uniform(1.0, 8.0))
    else:
        # A checkerboard, rotated, with a random cell size.
        cell = rng.uniform(6.0, 30.0)
        across = -math.sin(angle) * columns + math.cos(angle) * rows
        weight = (np.floor(along / cell) + np.floor(across / cell)) % 2
    # Mixing channel by channel keeps the inner loops contiguous, which is
    # several times faster than broadcasting over a trailing axis of 3.
    mixed = first[:, None, None] + weight[None] * (second - first)[:, None, None]
    return np.ascontiguousarray(np.clip(mixed, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def _draw_distractors(canvas, rng, size):
    """Draws translucent clutter that carries no class information.

    The clutter shares low-level features with both classes: small triangles
    and line segments have the corners and straight sides of a cross's arms,
    small dots and arcs have the curved outline of a disc. With clutter of
    only one kind, the network learned to spot the other class (curvature
    meant "disc") and to call everything else a cross, and Grad-CAM for
    crosses then lit up the background instead of the cross.

    The clutter is 30 to 70% opaque: opaque triangles drew the Grad-CAM peak
    away from the object in about a third of the images on plain backgrounds.
    """
    scale = size / 150.0
    clutter = canvas.copy()
    for _ in range(int(rng.integers(0, 4))):
        centre = rng.uniform(0, size, size=2)
        radius = rng.uniform(4.0, 10.0) * scale
        angles = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]) + rng.normal(0, 0.15, 3)
        corners = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        cv2.fillPoly(
            clutter, [np.round(corners * _DRAW_SCALE).astype(np.int32)],
            _random_colour_tuple(rng), lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
        )
    for _ in range(int(rng.integers(0, 4))):
        start = rng.uniform(0, size, size=2)
        length = rng.uniform(15.0, 80.0) * scale
        angle = rng.uniform(0, 2 * np.pi)
        end = start + length * np.array([math.cos(angle), math.sin(angle)])
        cv2.line(
            clutter, _to_draw_point(start), _to_draw_point(end), _random_colour_tuple(rng),
            thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
        )
    for _ in range(int(rng.integers(0, 3))):
        cv2.circle(
            clutter, _to_draw_point(rng.uniform(0, size, size=2)),
            round(rng.uniform(3.0, 7.0) * scale * _DRAW_SCALE),
            _random_colour_tuple(rng), thickness=-1, lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
        )
    for _ in range(int(rng.integers(0, 3))):
        radius = round(rng.uniform(8.0, 30.0) * scale * _DRAW_SCALE)
        start_angle = rng.uniform(0, 360)
        cv2.ellipse(
            clutter, _to_draw_point(rng.uniform(0, size, size=2)), (radius, radius), 0.0,
            start_angle, start_angle + rng.uniform(60, 200), _random_colour_tuple(rng),
            thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
        )
    opacity = rng.uniform(0.3, 0.7)
    cv2.addWeighted(clutter, opacity, canvas, 1.0 - opacity, 0.0, dst=canvas)


def _random_colour_tuple(rng):
    """Returns a random colour as the tuple of floats that cv2 drawing takes."""
    return tuple(float(channel) for channel in _random_colour(rng))


def _to_draw_point(point):
    """Converts an (x, y) point in pixels to cv2's fixed-point drawing units."""
    return tuple(int(value) for value in np.round(np.asarray(point) * _DRAW_SCALE))


def _random_centre(rng, size, extent, position_spread):
    """Returns an (x, y) centre that keeps an object of half-size `extent` inside.

    The centre is uniform in a square around the image centre whose half-side
    is `position_spread` times the largest offset that keeps the object inside
    the image and within `_MAX_CENTRE_OFFSET * size` of its centre.
    """
    reach = position_spread * min(_MAX_CENTRE_OFFSET * size, 0.5 * size - extent - 2.0)
    # The draw happens even for a zero reach, so that image i uses the same
    # random numbers for everything else whatever the spread.
    return 0.5 * size + reach * rng.uniform(-1.0, 1.0, size=2)


def _draw_disc_mask(mask, rng, size, position_spread):
    """Draws a filled, anti-aliased disc into the uint8 `mask` (255 = object)."""
    radius = rng.uniform(17.0, 36.0) * size / 150.0
    centre = _random_centre(rng, size, radius, position_spread)
    cv2.circle(
        mask, _to_draw_point(centre), round(radius * _DRAW_SCALE), 255,
        thickness=-1, lineType=cv2.LINE_AA,
        shift=_DRAW_SHIFT,
    )


def _draw_cross_mask(mask, rng, size, position_spread):
    """Draws a filled, anti-aliased, rotated plus-shaped cross into `mask`."""
    arm = rng.uniform(19.0, 38.0) * size / 150.0
    half_width = arm * rng.uniform(0.2, 0.36)
    # The twelve corners of a plus sign, counter-clockwise, before rotation.
    outline = np.array([
        (half_width, -arm), (half_width, -half_width), (arm, -half_width),
        (arm, half_width), (half_width, half_width), (half_width, arm),
        (-half_width, arm), (-half_width, half_width), (-arm, half_width),
        (-arm, -half_width), (-half_width, -half_width), (-half_width, -arm),
    ])
    angle = rng.uniform(0, np.pi / 2)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # A rotated cross reaches at most its arm's corner distance from the centre.
    centre = _random_centre(rng, size, np.hypot(arm, half_width), position_spread)
    corners = centre + outline @ rotation.T
    cv2.fillPoly(
        mask, [np.round(corners * _DRAW_SCALE).astype(np.int32)], 255,
        lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
    )


def _draw_decoy_mask(mask, rng, size, position_spread):
    """Draws a filled, rotated decoy into `mask`, or nothing at all.

    Decoys share parts of a cross or a disc but are neither, so a network
    that must answer "neither" for them has to find what makes each class:

    - a bar (one straight arm), an L (two arms at a right angle), a T
      (three arms) and a broken cross (all four arms, with a gap where they
      would cross) have a cross's arm ends and corners, but not its
      four-way crossing: a network must find a cross by its middle rather
      than by the tips of its arms, where its Grad-CAM would otherwise peak,
      just outside the cross's box;
    - squares share the straight sides and outer corners of a cross,
      triangles its pointed ends;
    - an empty image (no object: background and clutter only) sets what
      "no evidence" means, so that features every decoy has (arm ends) do
      not count as evidence for a cross merely by being more than nothing.

    All are about as large as discs and crosses.

    Returns:
        Whether anything was drawn.
    """
    kind = int(rng.integers(7))
    angle = rng.uniform(0, 2 * np.pi)
    if kind == 6:
        return False
    if kind in (0, 3, 4, 5):
        arm = rng.uniform(19.0, 38.0) * size / 150.0
        half_width = arm * rng.uniform(0.2, 0.36)
        gap = half_width + arm * rng.uniform(0.15, 0.35)
        # Rectangles (left, top, right, bottom) in a cross's coordinates: the
        # whole horizontal bar, or parts of a cross with arms left out.
        rectangles = {
            0: [(-arm, -half_width, arm, half_width)],
            3: [(-half_width, -half_width, arm, half_width),
                (-half_width, -half_width, half_width, arm)],
            4: [(-arm, -half_width, arm, half_width),
                (-half_width, -half_width, half_width, arm)],
            5: [(gap, -half_width, arm, half_width), (-arm, -half_width, -gap, half_width),
                (-half_width, gap, half_width, arm), (-half_width, -arm, half_width, -gap)],
        }[kind]
        outlines = [
            np.array([(left, top), (right, top), (right, bottom), (left, bottom)])
            for left, top, right, bottom in rectangles
        ]
    else:
        sides = 4 if kind == 1 else 3
        radius = rng.uniform(20.0, 40.0) * size / 150.0
        corner_angles = 2 * np.pi * np.arange(sides) / sides
        outlines = [radius * np.stack([np.cos(corner_angles), np.sin(corner_angles)], axis=1)]
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    extent = max(np.linalg.norm(outline, axis=1).max() for outline in outlines)
    centre = _random_centre(rng, size, extent, position_spread)
    # One polygon at a time: overlapping parts stay filled.
    for outline in outlines:
        corners = centre + outline @ rotation.T
        cv2.fillPoly(
            mask, [np.round(corners * _DRAW_SCALE).astype(np.int32)], 255,
            lineType=cv2.LINE_AA, shift=_DRAW_SHIFT,
        )
    return True

"""The Filters view's rules, without the UI: what a choice of filters means, which atlas to ask for, how urgently.

The page reads its widgets into an `AtlasChoice`, asks `grid_request` and
`large_pattern_request` for the atlases to show, submits them to the
server's `FilterAtlasCache` with `atlas_priority`, and draws a progress bar
from `progress_text` while `convviz_core.jobs.wait_for` waits. Everything
here can be tested without a browser.
"""

import dataclasses
import math

from convviz_core.errors import InputError
from convviz_core.features.atlas_cache import MAX_FILTERS, atlas_request, describe
from convviz_core.features.patterns import METHODS, default_pattern_layer, method_defaults, pattern_size  # noqa: F401 (METHODS: the page offers them)
from convviz_core.jobs import Priority

# What the page's widgets offer.
PATTERN_SIZES = (32, 48, 64, 96, 128, 150, 224)
FILTER_COUNTS = (8, 16, 32, MAX_FILTERS)
# The Steps box goes up to this (the core accepts up to `patterns.MAX_STEPS`).
PAGE_MAX_STEPS = 200
# A single pattern is shown large, so it is optimised at 150 pixels (the
# book's size) where the layer allows any size, rather than the grid's 128.
LARGE_PATTERN_SIZE = 150
# The grid's pattern side where the layer allows any size: 8x8 patterns of
# 128 pixels read well and cost a third of EfficientNet-Lite0's 224.
GRID_PATTERN_SIZE = 128
# How the page names the methods.
METHOD_TITLES = {
    "gradient-ascent": "The book's gradient ascent",
    "fourier": "Clear (Fourier, Lucid)",
}


@dataclasses.dataclass(frozen=True)
class AtlasChoice:
    """What a user chose on the Filters page.

    Attributes:
        layer: A layer from `model.layer_names`.
        first: The first filter of the grid.
        count: How many filters the grid shows (one of `FILTER_COUNTS`).
        size: The pattern side where the layer allows any size.
        steps: Optimisation steps (None: the method's default).
        method: "gradient-ascent" (the book's) or "fourier" (`METHODS`).
        schedule: For gradient ascent, "matched" (the default: Nesterov
            momentum, as few steps as reach the objective of the book's
            `steps`: 12 to 38 of 40, depending on the layer) or "book" (the
            book's plain loop);
            see `patterns.matched_steps`.
    """

    layer: str
    first: int = 0
    count: int = MAX_FILTERS
    size: int = GRID_PATTERN_SIZE
    steps: int | None = None
    method: str = "gradient-ascent"
    schedule: str = "matched"


def default_atlas_choice(model, method="gradient-ascent"):
    """The atlas the Filters page shows first: the book's 8x8 grid of `default_pattern_layer`."""
    return AtlasChoice(layer=default_pattern_layer(model), method=method)


def default_steps(method):
    """The steps a method takes unless the user asks for others."""
    return method_defaults(method)[0]


def chosen_filters(model, choice):
    """The filters a choice shows: `count` from `first`, cut at the layer's last filter.

    Args:
        model: A `VisionModel`.
        choice: An `AtlasChoice`.

    Returns:
        A list of filter indices (at least one).

    Raises:
        InputError: If the first filter is past the layer's filters, or the
            count is not one the page offers.
    """
    channels = model.layer_info(choice.layer).output_shape[-1]
    if int(choice.count) not in FILTER_COUNTS:
        raise InputError(
            f"Choose how many filters to show among {', '.join(map(str, FILTER_COUNTS))}. "
            f"Received: {choice.count}"
        )
    first = int(choice.first)
    if not 0 <= first < channels:
        raise InputError(
            f"Layer '{choice.layer}' has {channels} filters (0 to {channels - 1}). "
            "Choose a first filter in that range."
        )
    return list(range(first, min(first + int(choice.count), channels)))


def grid_request(model, choice):
    """The `AtlasRequest` of a choice's grid.

    Raises:
        InputError: As for `chosen_filters` and `atlas_request`.
    """
    return atlas_request(
        model,
        choice.layer,
        chosen_filters(model, choice),
        size=choice.size,
        steps=choice.steps,
        method=choice.method,
        schedule=choice.schedule,
    )


def large_pattern_request(model, choice, filter_index):
    """The `AtlasRequest` of one filter shown large, or None when the grid's pattern serves.

    Where the layer runs only at the model's input size, every pattern is
    optimised at that size, so the grid already holds the large pattern.
    """
    if pattern_size(model, LARGE_PATTERN_SIZE, choice.layer) == pattern_size(model, choice.size, choice.layer):
        return None
    return atlas_request(
        model,
        choice.layer,
        [filter_index],
        size=LARGE_PATTERN_SIZE,
        steps=choice.steps,
        method=choice.method,
        # For one filter the book's loop costs less than finding the matched
        # steps (two filters run both ways).
        schedule="book",
    )


def atlas_priority(model, choice, builtin):
    """How urgently to compute a choice's grid.

    A built-in model's default atlas is what every student opens first, and
    once computed it serves all of them (and every later server, from disk),
    so it goes ahead of anyone's own request.
    """
    if builtin and choice == default_atlas_choice(model):
        return Priority.URGENT
    return Priority.NORMAL


def submit_atlas(store, model, request, builtin, session_id, priority=Priority.NORMAL, wait_in_line=False,
                 source=None):
    """Asks the server's atlas cache for an atlas on behalf of a session.

    A built-in model's atlases are kept on disk; its default atlas
    (`Priority.URGENT`) runs without the pool's time limit, since it is
    computed once for everyone.

    Args:
        store: The server's `FilterAtlasCache`.
        model: The `VisionModel`.
        request: From `grid_request` or `large_pattern_request`.
        builtin: Whether the model is one of ConvViz's built-in models.
        session_id: The asking session's id (a newer request of the same
            session cancels its earlier one unless someone else waits too).
        priority: From `atlas_priority`.
        wait_in_line: Queue it even if the queue is full.
        source: An uploaded model's `ModelSource`, for a queue's worker
            (`FilterAtlasCache.submit`), or None.

    Returns:
        A `JobTicket` whose result is an `Atlas`.

    Raises:
        convviz_core.jobs.QueueFull: If the queue is full and `wait_in_line`
            is False; its `jobs_ahead` says how full.
    """
    return store.submit(
        model,
        request,
        use_disk=builtin,
        session_id=session_id,
        priority=priority,
        time_limit=math.inf if priority == Priority.URGENT else None,
        wait_in_line=wait_in_line,
        source=None if builtin else source,
    )


def describe_method(request):
    """How an atlas's patterns were found, in words for a caption."""
    if request.method == "fourier":
        return f"{request.steps} steps of the clear mode (Fourier image, Adam) each"
    if request.schedule == "matched":
        return (
            f"gradient ascent with momentum each, as far as the book's {request.steps} steps go "
            "(in fewer)"
        )
    return f"{request.steps} steps of gradient ascent each"


def size_note(model, choice):
    """Says at what size a choice's patterns are optimised, and why.

    Returns:
        One or two sentences for the page.
    """
    height, width = pattern_size(model, choice.size, choice.layer)
    if not model.has_fixed_input_size:
        return f"Patterns are {width}×{height}: this model accepts images of any size."
    input_height, input_width = model.input_size
    if (height, width) == tuple(model.input_size):
        if pattern_size(model, choice.size + 1, choice.layer) == (choice.size + 1, choice.size + 1):
            return f"Patterns are {width}×{height}, the model's own input size."
        return (
            f"Patterns are {width}×{height}, the model's input size: something on the way to "
            f"'{choice.layer}' needs exactly that size."
        )
    return (
        f"Patterns are {width}×{height}. The model classifies {input_width}×{input_height} images, "
        f"but everything up to '{choice.layer}' is convolutional and works at any size, and "
        f"smaller patterns compute faster ({(input_width * input_height) / (width * height):.1f}× "
        "fewer pixels)."
    )


def progress_text(status, request):
    """What a progress bar shows for a job's `JobStatus`.

    Returns:
        (fraction in [0, 1], text).
    """
    what = describe(request)
    if status.state == "queued":
        ahead = status.jobs_ahead
        jobs = "computation" if ahead == 1 else "computations"
        return 0.0, f"Waiting in line for {what}: {ahead} {jobs} ahead ({status.waited:.0f} s so far)..."
    return status.fraction, f"Optimising {what}: {status.elapsed:.0f} s"

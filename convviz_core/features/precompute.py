"""Computes the filter atlases of the offline models ahead of time, into the disk cache.

    python -m convviz_core.features.precompute                 # everything (see --help)
    python -m convviz_core.features.precompute --models small-convnet --methods book

A class should never wait for a built-in model's atlas. This computes, for
each offline model, the atlas the Filters page asks for first on every layer
(the book's gradient ascent with the matched schedule, 8x8 filters from 0,
the default size) and the clear mode's atlas of the layers a lesson shows
(`clear_mode_layers`), and stores them where the server's
`FilterAtlasCache` looks: `$CONVVIZ_CACHE_DIR/atlases`. Each request is
built by `atlas_service.grid_request` from the page's own `AtlasChoice`, so
a precomputed atlas has exactly the key the page asks for; one already on
disk is skipped. The keys hold the precision (bf16 where the CPU has it), so
atlases computed on one machine serve a machine of the same CPU kind, and a
server on another kind computes its own instead of showing someone else's.

The functions return plain values; only `main` writes (to stderr).
"""

import argparse
import dataclasses
import sys
import time

from convviz_core.errors import InputError
from convviz_core.features import atlas_service
from convviz_core.features.atlas_cache import FilterAtlasCache
from convviz_core.features.patterns import convolution_layers, default_pattern_layer

# The page's names for the methods, as the command takes them.
METHOD_NAMES = {"book": "gradient-ascent", "clear": "fourier"}
# The Filters page's "One filter, large": the book's pattern of one filter of
# the grid at `atlas_service.LARGE_PATTERN_SIZE`, the one that fires most on
# the student's photo, so any of the grid's filters.
LARGE = "large"
METHODS = (*METHOD_NAMES, LARGE)
# Convolutions of a model whose clear-mode atlases are computed ahead.
CLEAR_MODE_LAYER_COUNT = 5

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one atlas.

    Attributes:
        model_name, layer, method: Which atlas ("book" or "clear").
        state: "computed", "cached" (already on disk) or "failed".
        seconds: How long it took.
        message: Why it failed ("" otherwise).
    """

    model_name: str
    layer: str
    method: str
    state: str
    seconds: float
    message: str = ""


def offline_model_names():
    """The built-in models that need no download (their atlases can be computed anywhere)."""
    from convviz_core.models.registry import BUILTIN_MODELS

    return [name for name, entry in BUILTIN_MODELS.items() if entry.weights_file is None]


def clear_mode_layers(model, count=CLEAR_MODE_LAYER_COUNT):
    """The layers whose clear-mode atlases are computed ahead: the Filters page's first layer and a few across depth.

    The default layer (`default_pattern_layer`) plus `count` convolutions
    spread evenly over the model's convolutions, first to last, in the
    model's order. For EfficientNet-Lite0: stem_conv, block2b_expand_conv
    (the default), block3b_expand_conv, block5a_expand_conv,
    block6b_expand_conv and top_conv.

    Returns:
        A list of layer names from `model.layer_names`.
    """
    convolutions = convolution_layers(model)
    chosen = {default_pattern_layer(model)}
    if convolutions:
        last = len(convolutions) - 1
        chosen.update(convolutions[round(index * last / max(count - 1, 1))] for index in range(count))
    return [name for name in model.layer_names if name in chosen]


def planned_atlases(model, methods=METHODS, layers=None):
    """The (layer, method name, `AtlasRequest`) of everything to compute for a model, as the page asks for it.

    Args:
        model: A `VisionModel`.
        methods: Names from `METHODS`: "book" and "clear" are the grids,
            "large" the page's large pattern of each grid filter (one
            request per filter; its layer is named "layer, filter N").
        layers: Layer names, or None: every layer for "book",
            `clear_mode_layers` for "clear", the default layer for
            "large". Names the model lacks are left out (a list may name
            layers of several models).

    Raises:
        InputError: For an unknown method.
    """
    planned = []
    for method in methods:
        if method not in METHODS:
            raise InputError(f"Choose methods among {', '.join(METHODS)}. Received: {method!r}")
        chosen = layers
        if chosen is None:
            defaults = {"book": model.layer_names, "clear": clear_mode_layers(model)}
            chosen = defaults.get(method, [default_pattern_layer(model)])
        for layer in (name for name in chosen if name in model.layer_names):
            if method == LARGE:
                choice = atlas_service.AtlasChoice(layer=layer, method=METHOD_NAMES["book"])
                for index in atlas_service.chosen_filters(model, choice):
                    request = atlas_service.large_pattern_request(model, choice, index)
                    if request is not None:
                        planned.append((f"{layer}, filter {index}", method, request))
                continue
            choice = atlas_service.AtlasChoice(layer=layer, method=METHOD_NAMES[method])
            planned.append((layer, method, atlas_service.grid_request(model, choice)))
    return planned


def precompute(models, methods=METHODS, layers=None, store=None, report=None):
    """Computes every planned atlas of the models that the disk cache lacks.

    Args:
        models: `VisionModel`s (built-in ones: only those are kept on disk).
        methods, layers: As for `planned_atlases`.
        store: The `FilterAtlasCache` to fill. Default: one on
            `paths.cache_dir("atlases")`, the server's.
        report: Optional function called with (index, total, `Outcome`)
            after each atlas, and with (index, total, None) before it.

    Returns:
        A list of `Outcome`s, in the order computed.
    """
    store = store or FilterAtlasCache()
    plan = [(model, *entry) for model in models for entry in planned_atlases(model, methods, layers)]
    # What every student opens first comes first: each model's default grids,
    # then its large patterns, so that a build or a run cut short has them.
    defaults = {(model.name, default_pattern_layer(model)) for model in models}
    plan.sort(key=lambda entry: 1 if entry[2] == LARGE else 0 if (entry[0].name, entry[1]) in defaults else 2)
    outcomes = []
    for index, (model, layer, method, request) in enumerate(plan, start=1):
        if report is not None:
            report(index, len(plan), None)
        began = time.perf_counter()
        if store.lookup(request, use_disk=True) is not None:
            outcome = Outcome(model.name, layer, method, "cached", time.perf_counter() - began)
        else:
            try:
                store.get_or_compute(model, request, use_disk=True, time_limit=float("inf"))
                outcome = Outcome(model.name, layer, method, "computed", time.perf_counter() - began)
            except (InputError, ValueError, RuntimeError, MemoryError) as error:
                outcome = Outcome(model.name, layer, method, "failed", time.perf_counter() - began, str(error))
        # The patterns are on disk now; the memory cache need not hold them.
        store.clear_memory()
        outcomes.append(outcome)
        if report is not None:
            report(index, len(plan), outcome)
    return outcomes


def summarize(outcomes):
    """A few lines saying what was computed, skipped and failed, and how long it took."""
    counts = {state: [o for o in outcomes if o.state == state] for state in ("computed", "cached", "failed")}
    seconds = sum(outcome.seconds for outcome in outcomes)
    lines = [
        (
            f"{len(counts['computed'])} atlases computed, {len(counts['cached'])} already cached, "
            f"{len(counts['failed'])} failed, in {seconds:.0f} s."
        )
    ]
    for outcome in counts["failed"]:
        lines.append(f"failed: {outcome.model_name} {outcome.layer} ({outcome.method}): {outcome.message}")
    return lines


def _split(values):
    return [item for value in values for item in value.split(",") if item]


def main(arguments=None):
    """The command line; returns the exit code (0: all done, 1: some atlas failed, 2: bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m convviz_core.features.precompute",
        description=__doc__.split("\n\n")[0] + " The cache folder is $CONVVIZ_CACHE_DIR/atlases.",
        epilog="Exit codes: 0 every atlas is on disk, 1 some failed, 2 bad arguments.",
    )
    parser.add_argument(
        "--models", nargs="+", default=None, metavar="NAME",
        help=f"offline models (default: all of them: {', '.join(offline_model_names())})",
    )
    parser.add_argument(
        "--layers", nargs="+", default=None, metavar="LAYER",
        help="layers (default: every layer for the book's method, a few across depth for the clear mode)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), metavar="METHOD",
        help="book (gradient ascent, matched schedule), clear (the clear mode), large (the page's large "
        "pattern of each grid filter, 150 px, of the default layer); default: all three",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be computed, compute nothing")
    options = parser.parse_args(arguments)
    from convviz_core import load_model

    names = _split(options.models) if options.models else offline_model_names()
    unknown = [name for name in names if name not in offline_model_names()]
    methods = _split(options.methods)
    layers = _split(options.layers) if options.layers else None
    if unknown:
        parser.error(f"only offline models can be precomputed: {', '.join(offline_model_names())}. Received: {unknown}")
    try:
        models = [load_model(name) for name in names]
        if options.dry_run:
            for model in models:
                for layer, method, request in planned_atlases(model, methods, layers):
                    print(f"{model.name} {layer} {method} {request.key}", file=sys.stderr)
            return EXIT_OK
        # Checks the arguments before any long work.
        for model in models:
            planned_atlases(model, methods, layers)
        missing = [layer for layer in layers or () if not any(layer in model.layer_names for model in models)]
        if missing:
            raise InputError(f"No chosen model has a layer with filters named {', '.join(missing)}.")
    except InputError as error:
        parser.error(str(error))

    started = time.perf_counter()

    def report(index, total, outcome):
        if outcome is None:
            return
        elapsed = time.perf_counter() - started
        detail = f": {outcome.message}" if outcome.message else ""
        print(
            f"[{index}/{total}] {outcome.model_name} {outcome.layer} ({outcome.method}): {outcome.state} "
            f"in {outcome.seconds:.1f} s{detail} ({elapsed:.0f} s so far)",
            file=sys.stderr,
            flush=True,
        )

    outcomes = precompute(models, methods, layers, report=report)
    for line in summarize(outcomes):
        print(line, file=sys.stderr)
    return EXIT_FAILED if any(outcome.state == "failed" for outcome in outcomes) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

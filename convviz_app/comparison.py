"""What the Grad-CAM and Compare pages share: long jobs with a progress bar, verdicts, the comparison PNG.

- `run_long_job`: submits a computation to the server's one job pool (Score-CAM,
  faithfulness scores, the sanity check), draws its progress, offers to wait
  in line when the queue is full, and returns its result.
- `faithfulness_verdict`: whether a map beats the random-map chance level, in
  plain words.
- `comparison_png`: one picture of a whole comparison (labelled rows of
  original, map and overlay), for the download button.
"""

import cv2
import numpy as np
import plotly.graph_objects as go
import streamlit as st

from convviz_app import cached, figures
from convviz_core.cam.methods import CAM_METHODS
from convviz_core.explanations import score_maps as score_maps_together
from convviz_core.jobs import Priority, QueueFull, RemoteCall, wait_for
from convviz_core.metrics.deletion_insertion import DEFAULT_STEPS
from convviz_core.metrics.random_baseline import DEFAULT_SEEDS, beats_chance
from convviz_core.overlays import colorize, overlay


def method_title(name):
    """A method's name as papers write it ("Grad-CAM"): the method pickers' labels.

    A module-level function, not a lambda in the page: Streamlit keeps every
    widget's format_func, and a page's lambda would keep that run's photo.
    """
    return CAM_METHODS[name].title


def job_function(local, model_key, model, target, args, keep):
    """A long job: `local` in this process, or on a queue's worker when one can load the model.

    With `CONVVIZ_QUEUE_URL` set and a model a worker can load (a built-in
    one, or an upload stored in the shared cache: `cached.model_source`), the
    job is a `RemoteCall` of `convviz_core.remote_jobs.<target>` with the
    model's source and `args` (plain values and the image as an array); its
    result is kept in this replica's caches by `keep` (a function of the
    result that returns what the page gets). Otherwise it is `local`, a
    function of a progress callback, as without a queue.
    """
    source = cached.model_source(model_key, model)
    if source is None:
        return local
    return RemoteCall(f"convviz_core.remote_jobs:{target}", (source, *args), finish=keep)


def run_long_job(key, function, description, found=None, time_limit=None):
    """Runs `function(progress)` in the job pool, with a progress bar, and returns its result.

    Args:
        key: A hashable naming the result: equal keys (from any session)
            share one job.
        function: Called in the pool's worker with a progress callback
            (done, total) that raises when the job is cancelled, or a
            `RemoteCall` for a queue's worker (`job_function`).
        description: What it computes, for the progress bar and messages
            ("Score-CAM of 'tabby'").
        found: (found, value) from a cache lookup: a value already computed
            is returned at once.
        time_limit: Seconds the job may run; default: the pool's.

    Returns:
        The job's result. When the queue is full the page shows a "Wait in
        line" button and stops.

    Raises:
        Whatever the job raised (`InputError`, `JobCancelled`, ...).
    """
    if found is not None and found[0]:
        return found[1]
    wait_key = f"wait_in_line:{key!r}"
    try:
        ticket = cached.job_pool().submit_job(
            key,
            function,
            session_id=cached.current_session_id(),
            priority=Priority.NORMAL,
            time_limit=time_limit,
            wait_in_line=bool(st.session_state.get(wait_key)),
            description=description,
        )
    except QueueFull as full:
        st.warning(str(full))
        st.button("Wait in line", key=f"button:{wait_key}", type="primary",
                  on_click=st.session_state.__setitem__, args=(wait_key, True))
        st.stop()
    if ticket.done():
        return ticket.result()
    bar = st.progress(0.0, text=f"{description}: starting...")

    def report(status):
        if status.state == "queued":
            ahead = status.jobs_ahead
            bar.progress(0.0, text=f"{description}: waiting, {ahead} computation{'s' if ahead != 1 else ''} ahead")
        else:
            bar.progress(status.fraction, text=f"{description}: {status.fraction:.0%}, {status.elapsed:.0f} s")

    try:
        return wait_for(ticket, report)
    finally:
        bar.empty()


def faithfulness_verdict(scores, chance):
    """Says in plain words whether a map beats random maps on this image.

    The rule is core's `random_baseline.beats_chance` (the one the command's
    report and the Dataset page's leaderboard use): a map beats chance on
    deletion when its area is below the random maps' mean by more than their
    spread (removing what it points at first makes the class fall faster),
    and on insertion when its area is above theirs by more than their spread.

    Args:
        scores: A `cached.MapScores`.
        chance: A `RandomBaseline`.

    Returns:
        (short verdict, sentence): the verdict is "beats chance",
        "beats chance on deletion only", "beats chance on insertion only" or
        "no better than chance".
    """
    deletion_beats, insertion_beats = beats_chance(scores.curves, chance)
    if deletion_beats and insertion_beats:
        return "beats chance", (
            "Beats chance: removing what it points at makes the class fall faster, and revealing it "
            f"brings the class back faster, than with {chance.count} random maps."
        )
    if deletion_beats:
        return "beats chance on deletion only", (
            "Beats chance on deletion only: removing what it points at makes the class fall faster than "
            "random maps do, but revealing it alone does not bring the class back faster."
        )
    if insertion_beats:
        return "beats chance on insertion only", (
            "Beats chance on insertion only: revealing what it points at brings the class back faster "
            "than random maps do, but removing it does not make the class fall faster."
        )
    return "no better than chance", (
        f"No better than chance on this image: {chance.count} random maps score as well. "
        "Do not read much into this map."
    )


def score_line(scores, chance):
    """One line of scores next to the chance level, for captions and the PNG."""
    curves = scores.curves
    return (
        f"deletion {curves.deletion_auc:.3f} (chance {chance.deletion_auc:.3f} ± {chance.deletion_auc_spread:.3f}), "
        f"insertion {curves.insertion_auc:.3f} (chance {chance.insertion_auc:.3f} ± {chance.insertion_auc_spread:.3f})"
    )


PANEL = 224
LABEL_HEIGHT = 22
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_strip(lines, width, height_per_line=LABEL_HEIGHT, scale=0.45):
    strip = np.full((height_per_line * len(lines), width, 3), 255, np.uint8)
    for index, line in enumerate(lines):
        # OpenCV's Hershey fonts know ASCII only.
        ascii_line = line.replace("±", "+/-").replace("×", "x").replace("—", "-").replace("’", "'")
        ascii_line = ascii_line.encode("ascii", "replace").decode("ascii")
        cv2.putText(strip, ascii_line, (6, height_per_line * index + 15), _FONT, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return strip


def _panel(image):
    return cv2.resize(np.ascontiguousarray(image, np.uint8), (PANEL, PANEL), interpolation=cv2.INTER_AREA)


def comparison_png(title_lines, original, rows):
    """Composes one labelled picture of a comparison, as PNG bytes.

    Args:
        title_lines: Lines of text at the top (model, image, class, layer).
        original: RGB uint8 image as the model sees it.
        rows: [(label lines, map placed on the input float (h, w) in [0, 1],
            overlay RGB uint8)], one row each: original, map, overlay.

    Returns:
        PNG bytes.
    """
    width = 3 * PANEL + 4 * 8
    parts = [_text_strip(title_lines, width, scale=0.5)]
    original_panel = _panel(original)
    for label_lines, placed_map, overlay_image in rows:
        parts.append(_text_strip(label_lines, width))
        row = np.full((PANEL + 8, width, 3), 255, np.uint8)
        for column, picture in enumerate((original_panel, _panel(colorize(placed_map)), _panel(overlay_image))):
            left = 8 + column * (PANEL + 8)
            row[:PANEL, left:left + PANEL] = picture
        parts.append(row)
    return figures.png_bytes(np.concatenate(parts, axis=0))


def score_maps(model_key, model, image_key, image, layer_name, class_index, maps, steps=DEFAULT_STEPS,
               seeds=DEFAULT_SEEDS):
    """Scores maps of one class and layer, and the chance level, in one long job.

    Args:
        model_key, model, image_key, image: The selection.
        layer_name: The layer the maps come from.
        class_index: The class they explain (an int).
        maps: {method name: float32 map (h, w)}.
        steps: Steps per deletion / insertion curve.
        seeds: Seeds of the random maps.

    Returns:
        ({method: `cached.MapScores`}, `RandomBaseline`).
    """
    methods = tuple(maps)
    shape = tuple(int(side) for side in next(iter(maps.values())).shape)
    chance_args = (model_key, image_key, layer_name, class_index, shape, steps, tuple(seeds))

    def score_args(method):
        return (model_key, image_key, layer_name, class_index, method, steps, model, image, maps[method])

    chance_found = cached.chance_scores.lookup(*chance_args, model, image)
    found = {method: cached.map_scores.lookup(*score_args(method)) for method in methods}
    if chance_found[0] and all(hit for hit, _ in found.values()):
        return {method: value for method, (_, value) in found.items()}, chance_found[1]

    def compute(progress):
        return score_maps_together(
            maps, steps, seeds, progress,
            chance=lambda report: cached.chance_scores(*chance_args, model, image, _progress=report),
            scores_of=lambda method, report: cached.map_scores(*score_args(method), _progress=report),
        )

    def keep(result):
        scores, chance = result
        kept = {method: cached.map_scores.keep(scores[method], *score_args(method)) for method in methods}
        return kept, cached.chance_scores.keep(chance, *chance_args, model, image)

    label = "the map" if len(methods) == 1 else f"{len(methods)} maps"
    return run_long_job(
        ("cam-scores", model_key, image_key, layer_name, class_index, methods, steps, tuple(seeds)),
        job_function(compute, model_key, model, "map_scores",
                     (image, layer_name, class_index, dict(maps), steps, tuple(seeds)), keep),
        f"Scoring {label} against {len(seeds)} random maps",
    )


def slow_map(model_key, model, image_key, image, layer_name, class_index, method="score-cam"):
    """Score-CAM's map in a long job (one masked forward pass per channel of the layer).

    Returns:
        A `cached.ClassMap`.
    """
    args = (model_key, model, image_key, image, layer_name, class_index, method)
    return run_long_job(
        ("slow-cam", model_key, image_key, layer_name, class_index, method),
        job_function(lambda progress: cached.slow_class_map(*args, _progress=progress), model_key, model,
                     "class_map", (image, layer_name, class_index, method),
                     lambda value: cached.slow_class_map.keep(value, *args)),
        f"{CAM_METHODS[method].title} of '{model.class_label(class_index)}' at {layer_name}",
        found=cached.slow_class_map.lookup(*args),
    )


def is_computed(model_key, model, image_key, image, layer_name, class_index, method="score-cam"):
    """Whether a slow method's map is in the shared cache already (someone computed it)."""
    return cached.slow_class_map.lookup(model_key, model, image_key, image, layer_name, class_index, method)[0]


def resize_map(placed_map, shape):
    """A map resized to (height, width), e.g. the model input's."""
    placed_map = np.asarray(placed_map, np.float32)
    if placed_map.shape == tuple(shape):
        return placed_map
    return cv2.resize(placed_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def blend(image, placed_map, alpha):
    """The map superimposed on the image (as the pages show it), RGB uint8."""
    return overlay(image, placed_map, alpha)


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def curves_figure(scores, chance):
    """The deletion and insertion curves of every scored method, side by side (Plotly).

    Args:
        scores: {method: `cached.MapScores`}.
        chance: The `RandomBaseline` (its mean areas are drawn as levels).
    """
    from plotly.subplots import make_subplots

    figure = make_subplots(
        rows=1, cols=2,
        subplot_titles=(
            f"Deletion: lower is better (chance {chance.deletion_auc:.2f})",
            f"Insertion: higher is better (chance {chance.insertion_auc:.2f})",
        ),
    )
    for index, (method, score) in enumerate(scores.items()):
        curves = score.curves
        colour = _COLOURS[index % len(_COLOURS)]
        title = CAM_METHODS[method].title
        for column, (curve, area) in enumerate(
            ((curves.deletion_curve, curves.deletion_auc), (curves.insertion_curve, curves.insertion_auc)), start=1
        ):
            figure.add_scatter(
                x=curves.fractions, y=curve, mode="lines", name=f"{title}", legendgroup=method,
                showlegend=column == 1, line={"color": colour, "width": 2},
                hovertemplate=f"{title} (area {area:.3f})<br>%{{x:.0%}} of the pixels: p = %{{y:.3f}}<extra></extra>",
                row=1, col=column,
            )
    figure.update_xaxes(title_text="fraction of pixels removed", tickformat=".0%", row=1, col=1)
    figure.update_xaxes(title_text="fraction of pixels revealed", tickformat=".0%", row=1, col=2)
    figure.update_yaxes(title_text="class probability", range=[0, 1.02])
    figure.update_layout(height=330, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def sanity_figure(sanity):
    """Each method's rank correlation with its original map, per randomisation step (Plotly).

    Args:
        sanity: A `SanityCurves`.
    """
    figure = go.Figure()
    for index, (method, correlations) in enumerate(sanity.rank_correlation.items()):
        title = CAM_METHODS[method].title
        figure.add_scatter(
            x=list(range(len(sanity.steps))), y=correlations, mode="lines+markers", name=title,
            line={"color": _COLOURS[index % len(_COLOURS)], "width": 2},
            customdata=[[step, ssim] for step, ssim in zip(sanity.steps, sanity.ssim[method])],
            hovertemplate=f"{title}<br>up to %{{customdata[0]}}: Spearman %{{y:.2f}}, SSIM %{{customdata[1]:.2f}}<extra></extra>",
        )
    figure.update_xaxes(
        tickmode="array", tickvals=list(range(len(sanity.steps))), ticktext=sanity.steps, tickangle=-45,
        title_text="randomised down to (cumulative, from the top)",
    )
    figure.update_yaxes(title_text="Spearman rank correlation with the original map", range=[-1.05, 1.05])
    figure.update_layout(height=420, margin={"l": 10, "r": 10, "t": 20, "b": 10})
    return figure


def identical_groups(maps):
    """Groups methods whose maps are the same (to within 1e-6): they score the same.

    Args:
        maps: {method: float array (h, w)}.

    Returns:
        [[method, ...]] of the groups with more than one method, in order.
    """
    groups = []
    for method, heatmap in maps.items():
        for group in groups:
            if np.allclose(maps[group[0]], heatmap, atol=1e-6, rtol=0):
                group.append(method)
                break
        else:
            groups.append([method])
    return [group for group in groups if len(group) > 1]


def sanity_check(model_key, model, image_key, image, layer_name, class_index, methods, requested):
    """The cascading-randomisation sanity check in a long job, if computed already or `requested`.

    Returns:
        A `SanityCurves`, or None when it is neither computed nor requested.
    """
    args = (model_key, image_key, layer_name, class_index, tuple(methods), model, image)
    found = cached.sanity_curves.lookup(*args)
    if not (found[0] or requested):
        return None
    return run_long_job(
        ("sanity", model_key, image_key, layer_name, class_index, tuple(methods)),
        job_function(lambda progress: cached.sanity_curves(*args, _progress=progress), model_key, model,
                     "sanity_curves", (image, layer_name, class_index, tuple(methods)),
                     lambda value: cached.sanity_curves.keep(value, *args)),
        "Randomising the model's weights block by block",
        found=found,
    )

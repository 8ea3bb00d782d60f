"""The steps of the guided lesson: the book's §5.4 as a sequence of live views.

Each step is a title, two or three sentences and a function that draws a live
view of the current model and image (a sample photo, an upload or the camera's
snapshot). `pages/lesson.py` shows one step at a time with Back and Next;
`convviz_core.lesson` chooses the layers.
"""

import dataclasses

import streamlit as st

from convviz_app import cached, comparison, figures
from convviz_app.atlas_view import show_atlas
from convviz_core import InputError
from convviz_core.cam.methods import CAM_METHODS
from convviz_core.features import atlas_service as service
from convviz_core.intermediate_activations import channel_map, most_active_channel
from convviz_core.jobs import JobCancelled
from convviz_core.lesson import COMPARED_METHODS, lesson_layers

ALPHA = 0.4


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: its title, what it says, where it is in the book (or beyond it), and how it draws."""

    title: str
    text: str
    book: str
    draw: object


def _seen(context):
    return cached.display_jpeg(
        f"{context.model_key}|{context.image_key}",
        cached.model_input(context.model, context.image),
        figures.MAX_DISPLAY_WIDTH,
    )


def _grid(context, layer):
    grid = cached.layer_grid(context.model_key, context.model, context.image_key, context.image, layer)
    st.image(
        grid.png,
        caption=f"All {grid.channels} channels of {layer} ({grid.height}×{grid.width}); "
        f"{len(grid.dead)} dead for this image",
        width="stretch",
    )
    return grid


def draw_first_layer(context):
    image_column, grid_column = st.columns([1, 3])
    image_column.image(_seen(context), caption="What the model sees", width="stretch", output_format="JPEG")
    with grid_column:
        _grid(context, context.layers.first)


def draw_going_abstract(context):
    layer = st.select_slider(
        "Layer (from the input to the output)", options=context.layers.overview, key="lesson_abstract_layer"
    )
    _grid(context, layer)


def draw_dead_channels(context):
    grids = {
        layer: cached.layer_grid(context.model_key, context.model, context.image_key, context.image, layer)
        for layer in context.layers.overview
    }
    deadest = max(grids, key=lambda layer: len(grids[layer].dead) / grids[layer].channels)
    dead_column, _ = st.columns([1, 3])
    dead_column.metric("Dead channels", f"{len(grids[deadest].dead)} of {grids[deadest].channels}", help=deadest)
    _grid(context, deadest)


def _atlas(context, layer, method="gradient-ascent"):
    choice = dataclasses.replace(service.default_atlas_choice(context.model, method), layer=layer)
    request = service.grid_request(context.model, choice)
    _, atlas = show_atlas(context.model, request, context.is_builtin, service.atlas_priority(context.model, choice, context.is_builtin))
    return choice, request, atlas


def draw_one_filter(context):
    layer = context.layers.pattern
    choice, request, atlas = _atlas(context, layer)
    filters = service.chosen_filters(context.model, choice)
    activation = cached.layer_activations(context.model_key, context.model, context.image_key, context.image, (layer,))[layer]
    chosen = most_active_channel(activation, filters)
    where = context.model.heatmap_on_input(layer, channel_map(activation, chosen))
    pattern_column, overlay_column = st.columns(2)
    pattern_column.image(atlas.patterns[filters.index(chosen)], caption=f"What filter {chosen} of {layer} looks for", width="stretch")
    overlay_column.image(
        cached.channel_overlay_png(context.model_key, context.image_key, layer, chosen, context.image, where),
        caption=f"Where filter {chosen} fires on this image (the filter of the grid that fires most)",
        width="stretch",
    )


def draw_atlas_by_depth(context):
    layer = st.select_slider("Layer (from shallow to deep)", options=context.layers.by_depth, key="lesson_depth_layer")
    choice, request, atlas = _atlas(context, layer)
    st.image(
        cached.atlas_grid_png(request.key, atlas.patterns),
        caption=f"The first {len(atlas.patterns)} filters of {layer}, {service.describe_method(request)}",
        width="stretch",
    )


def draw_clear_mode(context):
    layer = context.layers.pattern
    book_column, clear_column = st.columns(2)
    for column, method in ((book_column, "gradient-ascent"), (clear_column, "fourier")):
        with column:
            _, request, atlas = _atlas(context, layer, method)
            st.image(
                cached.atlas_grid_png(request.key, atlas.patterns),
                caption=f"{service.METHOD_TITLES[method]}: {layer}",
                width="stretch",
            )


def _top_class(context):
    return int(cached.first_class_map(context.model_key, context.model, context.image_key, context.image).probabilities.argmax())


def _overlay(context, class_index, method, alpha=ALPHA):
    layer = context.layers.cam
    result = cached.class_map_reusing_first_pass(
        context.model_key, context.model, context.image_key, context.image, layer, class_index, method
    )
    placed = context.model.heatmap_on_input(layer, result.heatmap)
    return cached.overlay_png(context.model_key, context.image_key, f"{layer}:{method}", class_index, alpha, context.image, placed)


def draw_grad_cam(context):
    class_index = _top_class(context)
    alpha = st.slider("Overlay strength", 0.0, 1.0, ALPHA, 0.05, key="lesson_alpha")
    image_column, overlay_column = st.columns(2)
    image_column.image(
        cached.display_jpeg(context.image_key, context.image, figures.MAX_DISPLAY_WIDTH),
        caption="The image", width="stretch", output_format="JPEG",
    )
    overlay_column.image(
        _overlay(context, class_index, "grad-cam", alpha),
        caption=f"Grad-CAM of '{context.model.class_label(class_index)}' at {context.layers.cam}",
        width="stretch",
    )


def draw_methods(context):
    class_index = _top_class(context)
    columns = st.columns(len(COMPARED_METHODS))
    for column, method in zip(columns, COMPARED_METHODS):
        column.image(_overlay(context, class_index, method), caption=CAM_METHODS[method].title, width="stretch")
    st.caption(f"Each map explains '{context.model.class_label(class_index)}' at {context.layers.cam}.")


def draw_sanity_check(context):
    class_index = _top_class(context)
    requested_key = f"lesson_sanity:{context.model_key}:{context.image_key}:{class_index}"
    sanity = comparison.sanity_check(
        context.model_key, context.model, context.image_key, context.image, context.layers.cam, class_index,
        COMPARED_METHODS, st.session_state.get(requested_key),
    )
    if sanity is None:
        st.button(
            "Randomise the model and watch the maps", type="primary",
            on_click=st.session_state.__setitem__, args=(requested_key, True),
        )
        st.caption("A private copy's weights are re-initialised block by block from the top: seconds to a minute.")
        return
    st.plotly_chart(comparison.sanity_figure(sanity), key="lesson_sanity_chart")


STEPS = (
    Step(
        "What the first layer sees",
        "Each small square is one filter of the model's first layer run over your image: bright where the "
        "filter responds. The first layer finds edges, colours and simple textures, and you can still "
        "recognise the picture in almost every square.",
        "the book's figures 5-25 to 5-27",
        draw_first_layer,
    ),
    Step(
        "Deeper layers go abstract",
        "Move the slider towards the output. The deeper the layer, the smaller and more abstract its "
        "squares: they stop showing the picture and start showing *what is in it* (an ear, an eye, fur), "
        "the information the model needs to decide on a class.",
        "the book's figure 5-27",
        draw_going_abstract,
    ),
    Step(
        "Dead channels",
        "Some squares are flat: their filter found nothing in this image. Deep layers have more of them, "
        "since each deep filter looks for something specific that most images lack. Try another photo: "
        "other channels go dead.",
        "the book's §5.4.1",
        draw_dead_channels,
    ),
    Step(
        "What one filter looks for",
        "Start from gray noise and change the pixels, step by step, so that one filter responds as "
        "strongly as it can (gradient ascent): the picture you get is what that filter looks for. "
        "Beside it: where that filter fires on your image.",
        "the book's figures 5-29 and 5-30",
        draw_one_filter,
    ),
    Step(
        "Patterns by depth",
        "The same for 64 filters of a layer at a time. Shallow layers want colours and stripes, deeper "
        "ones textures, and the deepest whole parts of objects.",
        "the book's figures 5-31 to 5-33",
        draw_atlas_by_depth,
    ),
    Step(
        "A clearer picture",
        "The book's patterns are faint and noisy. Painting in smooth Fourier colours and shaking the "
        "picture at every step keeps only what the filter really wants (Olah et al., 2017): the same "
        "filters, far easier to read.",
        "beyond the book: feature visualisation",
        draw_clear_mode,
    ),
    Step(
        "Where the model looked: Grad-CAM",
        "Which parts of the image made the model choose its class? Grad-CAM weighs each channel of the "
        "last convolution by how much the class score depends on it: red where the evidence is.",
        "the book's figures 5-35 and 5-36",
        draw_grad_cam,
    ),
    Step(
        "Other ways to ask",
        "Grad-CAM is one of a family. Grad-CAM++ and Layer-CAM weigh each pixel by its own gradient; "
        "Eigen-CAM ignores the class and shows the image's main structure. Do they agree?",
        "beyond the book: the CAM family",
        draw_methods,
    ),
    Step(
        "Can we trust the map?",
        "Destroy the model's weights from the top down and compute the maps again. A map that explains "
        "the model must change once the weights behind the decision are gone (Adebayo et al., 2018); "
        "one that stays the same was showing the image, not the model.",
        "beyond the book: sanity checks",
        draw_sanity_check,
    ),
)


@dataclasses.dataclass(frozen=True)
class LessonContext:
    """What every step draws from: the sidebar's choice and the lesson's layers."""

    model_key: str
    model: object
    image_key: str
    image: object
    is_builtin: bool
    layers: object


def draw_step(step, selection):
    """Draws one step's live view; a user's error becomes a message, never a traceback."""
    context = LessonContext(
        selection.model_key, selection.model, selection.image_key, selection.image, selection.is_builtin,
        lesson_layers(selection.model),
    )
    try:
        step.draw(context)
    except (InputError, JobCancelled) as error:
        st.error(str(error))

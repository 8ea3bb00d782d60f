"""Compare: the CAM family side by side, scored against chance, with the model-randomisation sanity check.

Every fast method's map of one class, each with its RISE deletion and
insertion scores next to random maps' (Petsiuk et al., 2018), its time and a
verdict; Score-CAM and the sanity check (Adebayo et al., 2018) on buttons,
as long jobs; two classes side by side; one PNG of it all.
"""

import functools

import streamlit as st

from convviz_app import cached, comparison, figures
from convviz_app.address import Address, cam_layer, one_of
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.cam.methods import CAM_METHODS, FAST_METHODS
from convviz_core.jobs import JobCancelled
from convviz_core.predictions import rank_classes

hand_over_to_app()

ALPHA = 0.4
SLOW_METHOD = "score-cam"

selection = current_selection()
page_intro(
    "Compare explanations",
    "Seven ways to ask a convnet where it looked, side by side, and two ways to check the answer. "
    "Each map is scored by deleting the pixels it ranks first (a faithful map makes the class "
    "probability fall fast: low area) and by revealing them on a blurred copy (the class comes "
    "back fast: high area), next to random maps of the same size. The sanity check destroys the "
    "model's weights from the top down: a map that does not change was not explaining the model.",
    selection,
)
model = require_model(selection)
model_key, image_key, image = selection.model_key, selection.image_key, selection.image


def show_error(error):
    st.error(str(error))
    st.stop()


try:
    probabilities = cached.first_class_map(model_key, model, image_key, image).probabilities
except InputError as error:
    show_error(error)

ranked = rank_classes(model, probabilities, 2)
class_label = functools.partial(figures.class_option_label, model, probabilities)
address = Address("compare", ("class", "layer", "first", "second", "pair-method"))
class_column, layer_column = st.columns(2)
class_index = address.control(
    "class",
    class_column.selectbox,
    "Class to explain (type to search)",
    key=f"compare_class:{model_key}:{image_key}",
    parse=model.class_index_of,
    initial=ranked[0][0],
    options=range(model.class_count),
    index=ranked[0][0],
    format_func=class_label,
)
layer = cam_layer(address, layer_column.selectbox, model, f"compare_layer:{model_key}")
label = model.class_label(class_index)
seen = cached.model_input(model, image)
# The maps are drawn as wide as the overlays beside them (at most 480 pixels wide).
display_shape = (round(image.shape[0] * min(1.0, 480 / image.shape[1])), min(image.shape[1], 480))
placed_maps, overlays, png_rows = {}, {}, []


def draw_row(method, result, scores, chance):
    """One method: its map and overlay on the image, its scores, time and verdict."""
    placed = model.heatmap_on_input(layer, result.heatmap)
    placed_maps[method] = placed
    overlays[method] = cached.overlay_png(model_key, image_key, f"{layer}:{method}", class_index, ALPHA, image, placed)
    title = CAM_METHODS[method].title
    short_verdict, sentence = comparison.faithfulness_verdict(scores, chance)
    curves = scores.curves
    map_column, overlay_column, text_column = st.columns([1, 1, 2])
    map_column.image(
        cached.map_png(model_key, image_key, layer, class_index, method, display_shape, placed),
        caption=f"{title} map", width="stretch",
    )
    overlay_column.image(overlays[method], caption=f"{title} on the image", width="stretch")
    with text_column:
        st.markdown(f"**{title}**: {CAM_METHODS[method].description}")
        st.markdown(
            f"Deletion **{curves.deletion_auc:.3f}** (chance {chance.deletion_auc:.3f} ± "
            f"{chance.deletion_auc_spread:.3f}) · Insertion **{curves.insertion_auc:.3f}** "
            f"(chance {chance.insertion_auc:.3f} ± {chance.insertion_auc_spread:.3f}) · "
            f"Average drop {scores.average_drop.average_drop:.1f}% · {result.seconds:.2f} s"
        )
        (st.success if short_verdict == "beats chance" else st.warning)(sentence)
    png_rows.append((
        [f"{title}: {short_verdict} ({result.seconds:.2f} s)", comparison.score_line(scores, chance)],
        comparison.resize_map(placed, seen.shape[:2]),
        comparison.blend(seen, placed, ALPHA),
    ))


# --- The fast methods ----------------------------------------------------------------
st.subheader(f"{len(FAST_METHODS)} methods, one class: '{label}' at {layer}")
try:
    results = {
        method: cached.class_map_reusing_first_pass(model_key, model, image_key, image, layer, class_index, method)
        for method in FAST_METHODS
    }
    scores, chance = comparison.score_maps(
        model_key, model, image_key, image, layer, class_index,
        {method: result.heatmap for method, result in results.items()},
    )
except (InputError, JobCancelled) as error:
    show_error(error)

original_column, curves_column = st.columns([1, 3])
original_column.image(
    cached.display_jpeg(image_key, image, figures.MAX_DISPLAY_WIDTH), caption="Your image", width="stretch",
    output_format="JPEG",
)
with curves_column:
    st.plotly_chart(comparison.curves_figure(scores, chance), key="compare_curves")
same = comparison.identical_groups({method: result.heatmap for method, result in results.items()})
st.caption(
    f"Chance: {chance.count} seeded random maps as coarse as the layer's "
    f"({results[FAST_METHODS[0]].heatmap.shape[0]}×{results[FAST_METHODS[0]].heatmap.shape[1]}). "
    "A method beats chance when its deletion area is lower, and its insertion area higher, than the "
    "random maps' by more than their spread. Times are each map's own; the first map of a layer "
    "also compiles the layer's function."
    + "".join(
        f" {', '.join(CAM_METHODS[method].title for method in group)} give the same map here, so the same curves."
        for group in same
    )
)
for method in FAST_METHODS:
    draw_row(method, results[method], scores[method], chance)

# --- Score-CAM -----------------------------------------------------------------------
st.subheader("Score-CAM")
slow_key = f"compare_slow:{model_key}:{image_key}:{layer}:{class_index}"
if comparison.is_computed(model_key, model, image_key, image, layer, class_index, SLOW_METHOD) or st.session_state.get(slow_key):
    try:
        slow = comparison.slow_map(model_key, model, image_key, image, layer, class_index, SLOW_METHOD)
        slow_scores, slow_chance = comparison.score_maps(
            model_key, model, image_key, image, layer, class_index, {SLOW_METHOD: slow.heatmap}
        )
    except (InputError, JobCancelled) as error:
        show_error(error)
    draw_row(SLOW_METHOD, slow, slow_scores[SLOW_METHOD], slow_chance)
else:
    st.caption(
        f"{CAM_METHODS[SLOW_METHOD].description} One masked image per channel of {layer}: seconds to minutes."
    )
    st.button("Compute Score-CAM", on_click=st.session_state.__setitem__, args=(slow_key, True))

# --- Two classes ---------------------------------------------------------------------
st.subheader("Two classes side by side")
first_column, second_column, method_column = st.columns(3)
first_class = address.control(
    "first", first_column.selectbox, "First class", key=f"compare_first:{model_key}:{image_key}",
    parse=model.class_index_of, initial=ranked[0][0],
    options=range(model.class_count), index=ranked[0][0], format_func=class_label,
)
second_class = address.control(
    "second", second_column.selectbox, "Second class", key=f"compare_second:{model_key}:{image_key}",
    parse=model.class_index_of, initial=ranked[-1][0],
    options=range(model.class_count), index=ranked[-1][0], format_func=class_label,
)
pair_method = address.control(
    "pair-method", method_column.selectbox, "Method", key="compare_pair_method",
    parse=one_of(FAST_METHODS), initial=FAST_METHODS[0], advanced=True,
    options=FAST_METHODS, format_func=comparison.method_title,
)
pair_title = CAM_METHODS[pair_method].title
st.caption(
    f"What speaks for '{model.class_label(first_class)}', what for '{model.class_label(second_class)}': "
    f"{pair_title} of each class at {layer}."
    + ("" if CAM_METHODS[pair_method].class_specific else f" {pair_title} does not depend on the class.")
)
pair_columns = st.columns(3)
pair_columns[2].markdown(
    "Where the two maps differ is what tells the classes apart; where both are red, the model sees "
    "what the two classes share."
)
for column, pair_class in zip(pair_columns[:2], (first_class, second_class)):
    try:
        pair = cached.class_map_reusing_first_pass(model_key, model, image_key, image, layer, pair_class, pair_method)
    except InputError as error:
        show_error(error)
    placed = model.heatmap_on_input(layer, pair.heatmap)
    column.image(
        cached.overlay_png(model_key, image_key, f"{layer}:{pair_method}", pair_class, ALPHA, image, placed),
        caption=f"{pair_title} of '{model.class_label(pair_class)}' ({probabilities[pair_class]:.1%})",
        width="stretch",
    )
    png_rows.append((
        [f"{pair_title} of '{model.class_label(pair_class)}' ({probabilities[pair_class]:.1%})"],
        comparison.resize_map(placed, seen.shape[:2]),
        comparison.blend(seen, placed, ALPHA),
    ))

# --- Sanity check ---------------------------------------------------------------------
st.subheader("Sanity check: randomise the model")
sanity_key = f"compare_sanity:{model_key}:{image_key}:{layer}:{class_index}"
try:
    sanity = comparison.sanity_check(
        model_key, model, image_key, image, layer, class_index, FAST_METHODS, st.session_state.get(sanity_key)
    )
except (InputError, JobCancelled) as error:
    show_error(error)
if sanity is not None:
    st.plotly_chart(comparison.sanity_figure(sanity), key="compare_sanity_chart")
    st.caption(
        f"Rank correlation of each method's map of '{label}' with its original, as the weights of "
        f"{model.name} are re-initialised block by block from the top (a private copy; the model "
        "you use is untouched). A method that explains the model loses its likeness to the original "
        "once the top is random: its correlation leaves 1 (Adebayo et al., 2018); one that stays "
        "high shows the image, not the model. A map that "
        "becomes all zero counts as 0. Hover for the SSIM of the maps on the image."
    )
else:
    st.caption(
        "Re-initialises the model's weights block by block from the top, on a private copy, and "
        "recomputes every fast method's map after each step: seconds to a minute."
    )
    st.button("Run the sanity check", on_click=st.session_state.__setitem__, args=(sanity_key, True))

st.download_button(
    "Download the comparison (PNG)",
    data=comparison.comparison_png(
        [
            f"ConvViz - {selection.model_title}, image: {selection.image_title}",
            f"Class '{label}' at {layer}. Each row: what the model sees, the map, the map on it.",
        ],
        seen,
        png_rows,
    ),
    file_name=f"compare-{class_index}.png",
    mime="image/png",
    on_click="ignore",
)

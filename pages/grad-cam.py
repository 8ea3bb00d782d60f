"""Grad-CAM: which parts of the image made the model choose a class (book §5.4.3, figures 5-35 and 5-36).

The book's Grad-CAM by default; a picker offers the rest of the CAM family
(Score-CAM on a button, as it takes seconds). Under the map: its deletion and
insertion scores next to random maps', and whether it beats them.
"""

import functools

import streamlit as st

from convviz_app import cached, comparison, figures
from convviz_app.address import Address, cam_layer, lesson_mode, one_of, overlay_strength
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.cam.methods import CAM_METHODS, FAST_METHODS
from convviz_core.jobs import JobCancelled
from convviz_core.predictions import rank_classes

hand_over_to_app()

TOP = 5

selection = current_selection()
page_intro(
    "Grad-CAM: where the model looked",
    "The heatmap shows which parts of your image pushed the model towards one class: red where "
    "they did most, blue where they did not matter. It weighs each channel of a late "
    "convolution layer by how much the class score depends on it, exactly as the book does for "
    "its African elephants (figures 5-35 and 5-36); pick another class to see what speaks for it.",
    selection,
)
model = require_model(selection)
model_key, image_key, image = selection.model_key, selection.image_key, selection.image

try:
    model.default_cam_layer()  # A model without a convolution layer is refused here.
    # One pass gives the heatmap of the top class and every class's probability.
    probabilities = cached.first_class_map(model_key, model, image_key, image).probabilities
except InputError as error:
    st.error(str(error))
    st.stop()

ranked = rank_classes(model, probabilities, TOP)
address = Address("grad-cam", ("class", "layer", "method", "alpha"))
table_column, controls_column = st.columns([2, 3])
with table_column:
    st.markdown(f"**Top {len(ranked)} predictions**")
    st.dataframe(
        {
            "Class": [label for _, label, _ in ranked],
            "Index": [index for index, _, _ in ranked],
            "Probability": [probability for _, _, probability in ranked],
        },
        column_config={
            "Probability": st.column_config.ProgressColumn(
                "Probability", min_value=0.0, max_value=1.0, format="percent"
            ),
        },
        hide_index=True,
    )
    if model.is_binary:
        st.caption(
            "This model has one sigmoid output p: class 1 has probability p and class 0 has 1 − p. "
            "Class 0's heatmap explains the negated score."
        )

with controls_column:
    class_index = address.control(
        "class",
        st.selectbox,
        "Class to explain (type to search)",
        key=f"gradcam_class:{model_key}:{image_key}",
        parse=model.class_index_of,
        initial=ranked[0][0],
        options=range(model.class_count),
        index=ranked[0][0],
        # Not a lambda: Streamlit keeps the format_func of every widget a session has
        # shown, and this key changes with each photo, so a lambda (which holds this
        # run's page: photo, overlay, heatmap) would keep every photo of the session.
        format_func=functools.partial(figures.class_option_label, model, probabilities),
    )
    layer = cam_layer(
        address, st.selectbox, model, f"gradcam_layer:{model_key}",
        help="The book uses the last convolution layer: coarse but the most class-specific.",
    )
    method = address.control(
        "method",
        st.selectbox,
        "Method",
        key="gradcam_method",
        parse=one_of(CAM_METHODS),
        initial="grad-cam",
        advanced=True,
        options=list(CAM_METHODS),
        format_func=comparison.method_title,
        help="Grad-CAM is the book's. The Compare page shows them all side by side, scored.",
    )
    if not lesson_mode():
        st.caption(CAM_METHODS[method].description)
    alpha = overlay_strength(address, st.slider, "gradcam_alpha")

title = CAM_METHODS[method].title
label = model.class_label(class_index)
try:
    if method in FAST_METHODS:
        result = cached.class_map_reusing_first_pass(model_key, model, image_key, image, layer, class_index, method)
    elif comparison.is_computed(model_key, model, image_key, image, layer, class_index, method) or st.session_state.get(
        f"gradcam_slow:{model_key}:{image_key}:{layer}:{class_index}:{method}"
    ):
        result = comparison.slow_map(model_key, model, image_key, image, layer, class_index, method)
    else:
        st.info(
            f"{title} scores the image once per channel of {layer} (one masked image each), so it takes "
            "seconds to minutes; it runs in the server's queue for long computations."
        )
        st.button(
            f"Compute {title}",
            type="primary",
            on_click=st.session_state.__setitem__,
            args=(f"gradcam_slow:{model_key}:{image_key}:{layer}:{class_index}:{method}", True),
        )
        st.stop()
except (InputError, JobCancelled) as error:
    st.error(str(error))
    st.stop()
heatmap = result.heatmap

# Placed where each heatmap pixel looked: unpadded layers shift the map.
overlay = cached.overlay_png(
    model_key, image_key, f"{layer}:{method}", class_index, alpha, image, model.heatmap_on_input(layer, heatmap)
)
original_column, heatmap_column, overlay_column = st.columns(3)
original_column.image(
    cached.display_jpeg(image_key, image, figures.MAX_DISPLAY_WIDTH),
    caption="Your image",
    width="stretch",
    output_format="JPEG",
)
with heatmap_column:
    st.plotly_chart(figures.heatmap_figure(heatmap, colorscale="Jet", zmin=0.0, zmax=1.0, value_label="importance", height=300))
    st.caption(f"{title} of '{label}' at {layer}: {heatmap.shape[0]}×{heatmap.shape[1]} (hover for values)")
overlay_column.image(overlay, caption=f"Heatmap × {alpha:.2f} + image", width="stretch")
if not heatmap.any():
    st.info(
        f"Nothing in this image speaks for '{label}' at this layer: the heatmap is zero everywhere. "
        "Try the top class or another layer."
    )
st.download_button(
    "Download the overlay (PNG)",
    data=overlay,
    file_name=f"{method}-{class_index}.png",
    mime="image/png",
    on_click="ignore",
)

if lesson_mode():
    st.stop()
st.subheader("Can you trust this map?")
if not st.toggle(
    "Score the map against random maps",
    # Off until asked: each score is a long job (about 14 s on EfficientNet-Lite0), and
    # a class opening this page at once would queue thirty of them (bench_classroom.py).
    value=False,
    key="gradcam_score",
    help="Deletion and insertion take a few seconds per class and layer, in the server's queue for long jobs.",
):
    st.stop()
try:
    scores, chance = comparison.score_maps(
        model_key, model, image_key, image, layer, class_index, {method: heatmap}
    )
except (InputError, JobCancelled) as error:
    st.error(str(error))
    st.stop()
curves = scores[method].curves
deletion_column, insertion_column, time_column = st.columns(3)
deletion_column.metric(
    "Deletion area (lower is better)",
    f"{curves.deletion_auc:.3f}",
    delta=f"{curves.deletion_auc - chance.deletion_auc:+.3f} vs. chance",
    delta_color="inverse",
    help="Remove the pixels the map ranks first, step by step, and follow the class probability: the "
    "area under that curve (RISE, Petsiuk et al., 2018).",
)
insertion_column.metric(
    "Insertion area (higher is better)",
    f"{curves.insertion_auc:.3f}",
    delta=f"{curves.insertion_auc - chance.insertion_auc:+.3f} vs. chance",
    help="Reveal the pixels the map ranks first on a blurred copy of the image: the area under the "
    "class-probability curve (RISE, Petsiuk et al., 2018).",
)
# Markdown, not a metric: a time differs from run to run, and tests compare the metrics
# that sessions see together with those they see alone (tests/test_many_users.py).
time_column.markdown(
    f"Time for the map  \n**{result.seconds:.2f} s**",
    help="How long computing this map took (the first map of a layer also compiles its graph).",
)
short_verdict, sentence = comparison.faithfulness_verdict(scores[method], chance)
(st.success if short_verdict == "beats chance" else st.warning)(sentence)
st.caption(
    f"Chance: {chance.count} seeded random {heatmap.shape[0]}×{heatmap.shape[1]} maps, "
    f"{comparison.score_line(scores[method], chance)}; {len(curves.fractions) - 1} steps per curve. "
    "The Compare page scores every method this way."
)

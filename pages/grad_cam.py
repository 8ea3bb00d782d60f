"""Grad-CAM: which parts of the image made the model choose a class (book §5.4.3, figures 5-35 and 5-36)."""

import functools

import streamlit as st

from convviz_app import cached, figures
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.predictions import rank_classes

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
    default_layer = model.default_cam_layer()
    # One pass gives the heatmap of the top class and every class's probability.
    _, probabilities = cached.class_activation(model_key, model, image_key, image, default_layer, None)
except InputError as error:
    st.error(str(error))
    st.stop()

ranked = rank_classes(model, probabilities, TOP)
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
    class_index = st.selectbox(
        "Class to explain (type to search)",
        range(model.class_count),
        index=ranked[0][0],
        # Not a lambda: Streamlit keeps the format_func of every widget a session has
        # shown, and this key changes with each photo, so a lambda (which holds this
        # run's page: photo, overlay, heatmap) would keep every photo of the session.
        format_func=functools.partial(figures.class_option_label, model, probabilities),
        key=f"gradcam_class:{model_key}:{image_key}",
    )
    layer = st.selectbox(
        "Layer",
        model.layer_names,
        index=model.layer_names.index(default_layer),
        key=f"gradcam_layer:{model_key}",
        help="The book uses the last convolution layer: coarse but the most class-specific.",
    )
    alpha = st.slider("Overlay strength", min_value=0.0, max_value=1.0, value=0.4, step=0.05, key="gradcam_alpha")

try:
    heatmap, _ = cached.class_activation(model_key, model, image_key, image, layer, class_index)
except InputError as error:
    st.error(str(error))
    st.stop()

label = model.class_label(class_index)
# Placed where each heatmap pixel looked: unpadded layers shift the map.
overlay = cached.overlay_png(
    model_key, image_key, layer, class_index, alpha, image, model.heatmap_on_input(layer, heatmap)
)
original_column, heatmap_column, overlay_column = st.columns(3)
original_column.image(image, caption="Your image", width="stretch")
with heatmap_column:
    st.plotly_chart(figures.heatmap_figure(heatmap, colorscale="Jet", zmin=0.0, zmax=1.0, value_label="importance", height=300))
    st.caption(f"Grad-CAM of '{label}' at {layer}: {heatmap.shape[0]}×{heatmap.shape[1]} (hover for values)")
overlay_column.image(overlay, caption=f"Heatmap × {alpha:.2f} + image", width="stretch")
if not heatmap.any():
    st.info(
        f"Nothing in this image speaks for '{label}' at this layer: the heatmap is zero everywhere. "
        "Try the top class or another layer."
    )
st.download_button(
    "Download the overlay (PNG)",
    data=overlay,
    file_name=f"gradcam-{class_index}.png",
    mime="image/png",
    on_click="ignore",
)

"""Model: the book's `model.summary()` as a table, nested models expanded."""

import streamlit as st

from convviz_app import cached
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError

hand_over_to_app()

selection = current_selection()
page_intro(
    "The model, layer by layer",
    "A convnet is a stack of layers; each row below is one of them, from the input to the "
    "prediction. The output shape reads (batch, height, width, channels): watch the pictures "
    "shrink and the channels grow as you go down, as in the book's `model.summary()` at the "
    "start of §5.4. Layers with a (height, width, channels) output are the ones the other "
    "pages can show.",
    selection,
)
model = require_model(selection, spatial=False)

summary = cached.model_view(selection.model_key, model)
total_column, trainable_column, frozen_column = st.columns(3)
total_column.metric("Total parameters", f"{summary.total_parameters:,}")
trainable_column.metric("Trainable", f"{summary.trainable_parameters:,}")
frozen_column.metric(
    "Non-trainable",
    f"{summary.non_trainable_parameters:,}",
    help="Weights that training does not change, such as batch-norm statistics.",
)

height, width = model.input_size
facts = [f"**Input:** {width}×{height} RGB", f"**Layers:** {len(summary.rows)}"]
if model.class_count is not None:
    facts.append(f"**Classes:** {model.class_count}" + (" (one sigmoid output)" if model.is_binary else ""))
else:
    facts.append("**Classes:** none (the output is not a class score)")
try:
    facts.append(f"**Grad-CAM layer:** {model.default_cam_layer()}")
except InputError as error:
    st.error(str(error))
st.markdown(" · ".join(facts))

viewable = set(model.layer_names)
st.dataframe(
    {
        "Layer": [row.name for row in summary.rows],
        "Type": [row.type for row in summary.rows],
        "Output shape": [row.output_shape for row in summary.rows],
        "Parameters": [row.parameters for row in summary.rows],
        "In the views": [row.name in viewable for row in summary.rows],
    },
    column_config={
        "Parameters": st.column_config.NumberColumn("Parameters", format="localized"),
        "In the views": st.column_config.CheckboxColumn(
            "In the views", help="Shown on the Activations, Filters and Grad-CAM pages."
        ),
    },
    hide_index=True,
    height=min(36 * (len(summary.rows) + 1) + 3, 720),
)

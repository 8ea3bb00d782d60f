"""Activations: every channel of a layer for the chosen image (book §5.4.1, figures 5-25 to 5-27)."""

import streamlit as st

from convviz_app import cached, figures
from convviz_app.address import Address, integer, one_of
from convviz_app.atlas_view import unit_link
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core.intermediate_activations import overview_layers

hand_over_to_app()

selection = current_selection()
page_intro(
    "Intermediate activations",
    "Each small square below is what one filter of the chosen layer found in your image: "
    "bright where the filter responds, dark where it does not, and flat where it never fired "
    "(a *dead* channel). Slide through the layers to watch the picture turn from edges and "
    "colours into abstract, class-specific features. This is the book's figure 5-27, drawn the "
    "same way (each channel standardised, viridis colours); one channel opened large is its "
    "figures 5-25 and 5-26.",
    selection,
)
model = require_model(selection)
model_key, image_key, image = selection.model_key, selection.image_key, selection.image

address = Address("activation-maps", ("overview", "layers", "layer", "channel"))
overview = address.control(
    "overview",
    st.toggle,
    "Overview: several layers, one under another",
    key="activations_overview",
    parse=one_of([False, True], text=lambda on: str(int(on))),
    initial=False,
    text=lambda on: str(int(on)),
    advanced=True,
    help="The book's figure 5-27. For the book's small convnet the first eight layers are its figure.",
)


def parse_layers(text):
    """Layer names separated by commas, each a layer of this model."""
    return [one_of(model.layer_names)(name) for name in text.split(",") if name]


if overview:
    layers = address.control(
        "layers",
        st.multiselect,
        "Layers",
        key=f"activations_overview_layers:{model_key}",
        parse=parse_layers,
        initial=overview_layers(model),
        text=",".join,
        options=model.layer_names,
        default=overview_layers(model),
    )
    if not layers:
        st.info("Choose at least one layer.")
    for layer in layers:
        grid = cached.layer_grid(model_key, model, image_key, image, layer)
        st.subheader(layer)
        st.image(
            grid.png,
            caption=f"{grid.channels} channels of {grid.height}×{grid.width}; "
            f"{len(grid.dead)} dead for this image",
            width="stretch",
        )
else:
    layer = address.control(
        "layer",
        st.select_slider,
        "Layer (from the input to the output)",
        key=f"activations_layer:{model_key}",
        parse=one_of(model.layer_names),
        # The first layer the book would show: a convolution after its ReLU.
        initial=overview_layers(model)[0],
        options=model.layer_names,
        value=overview_layers(model)[0],
    )
    grid = cached.layer_grid(model_key, model, image_key, image, layer)
    shape_column, channels_column, dead_column = st.columns(3)
    shape_column.metric("Feature map", f"{grid.height} × {grid.width}")
    channels_column.metric("Channels", grid.channels)
    dead_column.metric(
        "Dead channels",
        f"{len(grid.dead)} of {grid.channels}",
        help="Channels that are the same everywhere on this image: their filter found nothing here.",
    )
    st.image(
        grid.png,
        caption=f"All {grid.channels} channels of {layer}, 16 to a row, in channel order. "
        "Flat squares are dead channels; dark squares after the last channel only fill the row.",
        width="stretch",
    )

    st.subheader("One channel, large")
    channel = address.control(
        "channel",
        st.slider,
        "Channel",
        key=f"activations_channel:{model_key}:{layer}",
        parse=integer(0, grid.channels - 1),
        initial=0,
        min_value=0,
        max_value=grid.channels - 1,
        value=0,
    )
    st.page_link(
        "pages/unit.py",
        label=f"Everything about channel {channel}: the pattern it looks for, the photos it likes",
        icon=":material/center_focus_strong:",
        query_params=unit_link(selection, layer, channel),
    )
    activation = cached.layer_activations(model_key, model, image_key, image, (layer,))[layer]
    values = activation[:, :, channel]
    status = "dead for this image" if channel in grid.dead else (
        f"from {values.min():.3g} to {values.max():.3g}"
    )
    heatmap_column, image_column = st.columns([3, 2])
    with heatmap_column:
        st.plotly_chart(
            figures.heatmap_figure(values, colorscale="Viridis", value_label="activation"),
        )
        st.caption(f"Channel {channel} of {layer}: {status}. Hover for values, drag to zoom.")
    image_column.image(
        cached.display_jpeg(f"{model_key}|{image_key}", cached.model_input(model, image), figures.MAX_DISPLAY_WIDTH),
        caption="The image as the model sees it, to compare with",
        width="stretch",
        output_format="JPEG",
    )

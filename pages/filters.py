"""Filters: the pattern each filter responds to most (book §5.4.2, figures 5-29 to 5-33)."""

import streamlit as st

from convviz_app import cached, figures
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.intermediate_activations import channel_map, most_active_channel
from convviz_core.features.atlas_cache import atlas_request
from convviz_core.features.patterns import default_pattern_layer

PATTERN_SIZES = [32, 48, 64, 96, 128, 150, 224]
FILTER_COUNTS = [8, 16, 32, 64]
# A single pattern is shown large, so models that accept any size optimise it
# at 150 pixels (the book's size) rather than the grid's 64.
LARGE_PATTERN_SIZE = 150

selection = current_selection()
page_intro(
    "Filter patterns",
    "Each square is a picture invented by gradient ascent: starting from gray noise, ConvViz "
    "changes the pixels step by step until one filter of the layer responds as strongly as it "
    "can. So the square shows what that filter looks for — colours and edges in early layers, "
    "textures deeper in. This is the book's figures 5-30 to 5-33 (an 8×8 grid of a layer's "
    "first 64 filters); below the grid, one filter is shown large next to where it fires on "
    "your image.",
    selection,
)
model = require_model(selection)
model_key, image_key, image = selection.model_key, selection.image_key, selection.image

params_key = f"filters_params:{model_key}"
if params_key not in st.session_state:
    st.session_state[params_key] = {
        "layer": default_pattern_layer(model),
        "first": 0,
        "count": 64,
        "size": 64,
        "steps": 40,
    }
params = st.session_state[params_key]

with st.form(f"filters_form:{model_key}"):
    layer_column, first_column, count_column, size_column, steps_column = st.columns([3, 1, 1, 1, 1])
    layer = layer_column.selectbox(
        "Layer", model.layer_names, index=model.layer_names.index(params["layer"])
    )
    first = first_column.number_input("First filter", min_value=0, value=params["first"], step=8)
    count = count_column.selectbox("Filters", FILTER_COUNTS, index=FILTER_COUNTS.index(params["count"]))
    size = size_column.select_slider(
        "Pattern size",
        PATTERN_SIZES,
        value=params["size"],
        disabled=model.has_fixed_input_size,
        help="Only for models that accept any input size; the others use their own.",
    )
    steps = steps_column.number_input("Steps", min_value=0, max_value=200, value=params["steps"], step=10)
    if st.form_submit_button("Compute patterns", type="primary"):
        params = {"layer": layer, "first": int(first), "count": int(count), "size": int(size), "steps": int(steps)}
        st.session_state[params_key] = params

if model.has_fixed_input_size:
    height, width = model.input_size
    st.caption(f"This model takes {width}×{height} images, so its patterns are {width}×{height}.")

channels = model.layer_info(params["layer"]).output_shape[-1]
if params["first"] >= channels:
    st.error(
        f"Layer '{params['layer']}' has {channels} filters (0 to {channels - 1}). "
        "Choose a first filter in that range."
    )
    st.stop()
filter_indices = list(range(params["first"], min(params["first"] + params["count"], channels)))
store = cached.atlas_store()


def wait_for(job, what):
    """Shows a progress bar with the elapsed time until an atlas job finishes."""
    if job.done():
        return job.result()
    bar = st.progress(0.0, text=f"Starting: {what}...")
    while not job.wait(0.25):
        done, total = job.progress
        if job.started:
            bar.progress(done / total, text=f"Optimising {what}: {job.elapsed:.0f} s")
        else:
            bar.progress(0.0, text=f"Waiting for another atlas to finish before {what}...")
    bar.empty()
    return job.result()


try:
    request = atlas_request(model, params["layer"], filter_indices, size=params["size"], steps=params["steps"])
    job = store.submit(model, request, use_disk=selection.is_builtin)
    atlas = wait_for(job, f"{len(filter_indices)} patterns of {params['layer']}")
except InputError as error:
    st.error(str(error))
    st.stop()

if atlas.source == "computed":
    st.success(f"Computed in {job.elapsed:.1f} s; kept for everyone who asks for the same patterns.")
else:
    st.caption("Patterns from the shared cache: computed once, for every session.")
st.image(
    cached.atlas_grid_png(request.key, atlas.patterns),
    caption=f"Filters {filter_indices[0]} to {filter_indices[-1]} of {params['layer']}, "
    f"in reading order, {params['steps']} steps of gradient ascent each",
)

st.subheader("One filter, large")
activation = cached.layer_activations(model_key, model, image_key, image, (params["layer"],))[params["layer"]]
chosen = st.select_slider(
    "Filter",
    options=filter_indices,
    value=most_active_channel(activation, filter_indices),
    key=f"filters_pick:{request.key}:{image_key}",
    help="It starts at the filter of the grid that responds most to your image.",
)
position = filter_indices.index(chosen)
if model.has_fixed_input_size:
    pattern = atlas.patterns[position]
else:
    try:
        single = atlas_request(
            model, params["layer"], [chosen], size=LARGE_PATTERN_SIZE, steps=params["steps"]
        )
        pattern = wait_for(store.submit(model, single, use_disk=selection.is_builtin), "one pattern").patterns[0]
    except InputError as error:
        st.error(str(error))
        st.stop()

where = model.heatmap_on_input(params["layer"], channel_map(activation, chosen))
pattern_column, channel_column, overlay_column = st.columns(3)
pattern_column.image(pattern, caption=f"What filter {chosen} looks for", width="stretch")
with channel_column:
    st.plotly_chart(
        figures.heatmap_figure(activation[:, :, chosen], colorscale="Viridis", value_label="activation", height=360)
    )
    st.caption(f"Channel {chosen} of {params['layer']} on your image (hover for values)")
overlay_column.image(
    cached.channel_overlay_png(model_key, image_key, params["layer"], chosen, image, where),
    caption="Where it fires on your image",
    width="stretch",
)

"""Filters: the pattern each filter responds to most (book §5.4.2, figures 5-29 to 5-33).

The page reads its widgets, asks `convviz_core.features.atlas_service` what
to compute, submits it to the server's one job pool through the shared
atlas cache, and draws a progress bar while it waits.
"""

import dataclasses

import streamlit as st

from convviz_app import cached, figures
from convviz_app.address import Address, integer, lesson_mode, one_of
from convviz_app.atlas_view import show_atlas, unit_link
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.features import atlas_service as service
from convviz_core.intermediate_activations import channel_map, most_active_channel
from convviz_core.jobs import JobCancelled, Priority

hand_over_to_app()

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
    st.session_state[params_key] = dataclasses.asdict(service.default_atlas_choice(model))
# Settings saved without a newer field (a link, a test) take its default.
params = {**dataclasses.asdict(service.default_atlas_choice(model)), **st.session_state[params_key]}
# The atlas's settings travel in the address; a link's new values are as if submitted.
LINKED = {
    "method": one_of(service.METHODS),
    "layer": one_of(model.layer_names),
    "first": integer(0, 1 << 20),
    "count": one_of(service.FILTER_COUNTS),
    "size": one_of(service.PATTERN_SIZES),
    "steps": integer(0, service.PAGE_MAX_STEPS),
    "schedule": one_of(("matched", "book")),
}
address = Address("filter-patterns", (*LINKED, "filter"))
for name, parse in LINKED.items():
    link_key = f"filters_link:{model_key}:{name}"
    address.take_link(name, link_key, parse)
    if link_key in st.session_state:
        params = {**params, name: st.session_state.pop(link_key)}
        st.session_state[params_key] = params

def settings_form(params):
    """The atlas's settings; a submit saves them for this model and returns them."""
    with st.form(f"filters_form:{model_key}"):
        method = st.radio(
            "Method",
            service.METHODS,
            index=service.METHODS.index(params["method"]),
            format_func=service.METHOD_TITLES.get,
            horizontal=True,
            help="The book's gradient ascent (figures 5-30 to 5-33) climbs pixel by pixel and gives "
            "faint, high-frequency textures. The clear mode (Olah et al., Distill 2017) paints in "
            "smooth Fourier colours and shakes the picture at every step, so only what the filter "
            "robustly wants survives: slower, but far easier to read.",
        )
        layer_column, first_column, count_column, size_column, steps_column = st.columns([3, 1, 1, 1, 1])
        layer = layer_column.selectbox(
            "Layer", model.layer_names, index=model.layer_names.index(params["layer"])
        )
        first = first_column.number_input("First filter", min_value=0, value=params["first"], step=8)
        count = count_column.selectbox(
            "Filters", service.FILTER_COUNTS, index=service.FILTER_COUNTS.index(params["count"])
        )
        size = size_column.select_slider(
            "Pattern size",
            service.PATTERN_SIZES,
            value=params["size"],
            help="Where the model is convolutional up to the layer, patterns can have any size; "
            "otherwise they have the model's input size.",
        )
        shown_steps = params["steps"] if params["steps"] is not None else service.default_steps(params["method"])
        steps = steps_column.number_input(
            "Steps",
            min_value=0,
            max_value=service.PAGE_MAX_STEPS,
            value=shown_steps,
            step=8,
            help=f"The book's gradient ascent takes {service.default_steps('gradient-ascent')} steps; with Fast "
            f"on, ConvViz takes as few as reach what these steps reach. The clear mode takes "
            f"{service.default_steps('fourier')} Adam steps.",
        )
        matched = st.checkbox(
            "Fast: momentum, as far as the book's steps go",
            value=params["schedule"] == "matched",
            help="For the book's gradient ascent. On: Nesterov momentum reaches the objective of the "
            "book's steps in fewer (from a third to nearly all of them, depending on the layer: ConvViz "
            "measures how many on two filters of the layer). Off: the book's plain loop, step for step.",
        )
        if st.form_submit_button("Compute patterns", type="primary"):
            # Steps left at the old method's default follow the new method's default.
            unchanged = int(steps) == service.default_steps(params["method"])
            params = {
                "layer": layer,
                "first": int(first),
                "count": int(count),
                "size": int(size),
                "steps": None if unchanged else int(steps),
                "method": method,
                "schedule": "matched" if matched else "book",
            }
            st.session_state[params_key] = params
    return params


if not lesson_mode():
    params = settings_form(params)
st.caption(service.size_note(model, service.AtlasChoice(**params)))
choice = service.AtlasChoice(**params)
for name in LINKED:
    address.show(name, params[name])


def show(request, priority=Priority.NORMAL):
    """The atlas of a request, with its progress while it computes."""
    return show_atlas(model, request, selection.is_builtin, priority)


try:
    filter_indices = service.chosen_filters(model, choice)
    request = service.grid_request(model, choice)
    job, atlas = show(request, service.atlas_priority(model, choice, selection.is_builtin))
except (InputError, JobCancelled) as error:
    st.error(str(error))
    st.stop()

if atlas.source == "computed":
    st.success(f"Computed in {job.elapsed:.1f} s; kept for everyone who asks for the same patterns.")
else:
    st.caption("Patterns from the shared cache: computed once, for every session.")
st.image(
    cached.atlas_grid_png(request.key, atlas.patterns),
    caption=f"Filters {filter_indices[0]} to {filter_indices[-1]} of {choice.layer}, "
    f"in reading order, {service.describe_method(request)}",
)

st.subheader("One filter, large")
activation = cached.layer_activations(model_key, model, image_key, image, (choice.layer,))[choice.layer]
most_active = most_active_channel(activation, filter_indices)
chosen = address.control(
    "filter",
    st.select_slider,
    "Filter",
    key=f"filters_pick:{request.key}:{image_key}",
    parse=one_of(filter_indices),
    initial=most_active,
    options=filter_indices,
    value=most_active,
    help="It starts at the filter of the grid that responds most to your image.",
)
try:
    single = service.large_pattern_request(model, choice, chosen)
    pattern = atlas.patterns[filter_indices.index(chosen)] if single is None else show(single)[1].patterns[0]
except (InputError, JobCancelled) as error:
    st.error(str(error))
    st.stop()

st.page_link(
    "pages/unit.py",
    label=f"Everything about filter {chosen}: both methods, its diversity set, the photos it likes",
    icon=":material/center_focus_strong:",
    query_params=unit_link(selection, choice.layer, chosen),
)
where = model.heatmap_on_input(choice.layer, channel_map(activation, chosen))
pattern_column, channel_column, overlay_column = st.columns(3)
pattern_column.image(pattern, caption=f"What filter {chosen} looks for", width="stretch")
with channel_column:
    st.plotly_chart(
        figures.heatmap_figure(activation[:, :, chosen], colorscale="Viridis", value_label="activation", height=360)
    )
    st.caption(f"Channel {chosen} of {choice.layer} on your image (hover for values)")
overlay_column.image(
    cached.channel_overlay_png(model_key, image_key, choice.layer, chosen, image, where),
    caption="Where it fires on your image",
    width="stretch",
)

"""One unit: everything ConvViz knows about one channel of one layer, on one page.

Reached from a channel of the Activations page or a filter of the Filters
page, and by a shareable link (`?layer=...&channel=...`, plus `model=` for a
built-in model). It shows the unit's pattern by the book's gradient ascent
and by the clear mode, the clear mode's diversity set (several different
pictures the unit likes), its activation on your image and where it fires,
and the patches of the sample photos and of your uploads that excite it most
(OpenAI Microscope's "dataset examples", for your own images), or the top 9
over your own set of images (a ZIP, shared with the Dataset page), searched in
the server's job pool.
"""

import streamlit as st

from convviz_app import cached, figures, image_sets
from convviz_app.address import Address, integer, one_of
from convviz_app.atlas_view import show_atlas
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.features import atlas_service as service
from convviz_core.features.atlas_cache import atlas_request
from convviz_core.features.patterns import default_pattern_layer
from convviz_core.intermediate_activations import channel_map
from convviz_core.jobs import JobCancelled

hand_over_to_app()

DIVERSITY_COUNT = 4
EXAMPLE_COUNT = 8
# The top 9 over the user's set: a 3x3 sheet, one patch per image.
SET_EXAMPLE_COUNT = 9
SKIPPED_LISTED = 3

selection = current_selection()
page_intro(
    "One unit",
    "A unit is one channel of one layer: one filter. Here it is from every side: the picture it "
    "likes best (by the book's gradient ascent, and in the clear mode), several different "
    "pictures it likes, where it fires on your image, and the parts of real photos that excite "
    "it most. Share the page's address to show someone the same unit.",
    selection,
)
model = require_model(selection)
model_key, image_key, image = selection.model_key, selection.image_key, selection.image

# The address names this unit, so it can be shared; the other pages link here.
address = Address("unit", ("layer", "channel"))
default_layer = default_pattern_layer(model)
layer_column, channel_column = st.columns([3, 1])
layer = address.control(
    "layer",
    layer_column.selectbox,
    "Layer",
    key="unit_layer",
    parse=one_of(model.layer_names),
    initial=default_layer,
    options=model.layer_names,
    index=model.layer_names.index(default_layer),
)
channels = model.layer_info(layer).output_shape[-1]
channel = address.control(
    "channel",
    channel_column.number_input,
    "Channel",
    key=f"unit_channel:{layer}",
    parse=integer(0, channels - 1),
    initial=0,
    min_value=0,
    max_value=channels - 1,
    value=0,
)

st.subheader("What it looks for")
book_column, clear_column = st.columns(2)
try:
    for column, method in ((book_column, "gradient-ascent"), (clear_column, "fourier")):
        request = atlas_request(
            model, layer, [channel], size=service.LARGE_PATTERN_SIZE, method=method
        )
        with column:
            _, atlas = show_atlas(model, request, selection.is_builtin)
            st.image(atlas.patterns[0], caption=service.METHOD_TITLES[method], width="stretch")
    st.markdown("**Its diversity set:** different pictures the unit likes (the clear mode, pushed apart).")
    request = atlas_request(
        model, layer, [channel] * DIVERSITY_COUNT, size=service.GRID_PATTERN_SIZE, method="fourier",
        objective="diversity",
    )
    _, atlas = show_atlas(model, request, selection.is_builtin)
    st.image(list(atlas.patterns), width=180)
except (InputError, JobCancelled) as error:
    st.error(str(error))
    st.stop()

st.subheader("On your image")
activation = cached.layer_activations(model_key, model, image_key, image, (layer,))[layer]
values = activation[:, :, channel]
where = model.heatmap_on_input(layer, channel_map(activation, channel))
map_column, overlay_column = st.columns(2)
with map_column:
    st.plotly_chart(figures.heatmap_figure(values, colorscale="Viridis", value_label="activation", height=360))
    st.caption(f"Channel {channel} of {layer} on {selection.image_title} (hover for values)")
overlay_column.image(
    cached.channel_overlay_png(model_key, image_key, layer, channel, image, where),
    caption="Where it fires on your image" if values.max() > 0 else "It does not fire on your image",
    width="stretch",
)


def show_examples(examples, title_of, nothing_found, caption):
    """Draws dataset examples, strongest first, each captioned with its image's name and its score."""
    if not examples:
        st.info(nothing_found)
        return
    st.image(
        [example.patch for example in examples],
        caption=[f"{title_of(example.image_key)}: {example.score:.3g}" for example in examples],
        width=120,
    )
    st.caption(caption)


st.subheader("Where it fires most in real photos")
upload = st.file_uploader(
    "Look through your own set of images too (a .zip)", type=["zip"], max_upload_size=image_sets.MAX_ZIP_MB,
    key="unit_set_zip", help="The same set as on the Dataset page: uploading it on either page is enough.",
)
if upload is not None:
    try:
        image_sets.set_from_upload(upload)
    except InputError as error:
        st.error(str(error))
image_set = image_sets.current_set()
from_set = False
if image_set is not None:
    choice_column, forget_column = st.columns([4, 1])
    # Plain strings, not a format_func: Streamlit would keep the function, and with it this run's set.
    choice = choice_column.radio(
        "Examples from", ["the sample photos", image_sets.set_title(image_set)], index=1, horizontal=True,
        key=f"unit_examples_from:{image_set.digest}",
    )
    forget_column.button("Forget the set", on_click=image_sets.forget_set, key="unit_forget_set")
    from_set = choice != "the sample photos"

if from_set:
    try:
        examples, skipped = image_sets.unit_examples_of_set(model_key, model, image_set, layer, channel,
                                                            SET_EXAMPLE_COUNT)
    except JobCancelled:
        st.warning("The search was cancelled. Choose the set again to start over.")
        st.stop()
    except InputError as error:
        st.error(str(error))
        st.stop()
    if skipped:
        listed = "; ".join(f"{name}: {message}" for name, message in skipped[:SKIPPED_LISTED])
        more = f" (the first {SKIPPED_LISTED} below)" if len(skipped) > SKIPPED_LISTED else ""
        st.warning(f"{len(skipped):,} of the {len(image_set):,} images could not be read and were skipped{more}. "
                   f"{listed}")
    show_examples(
        examples, str, f"This unit fires on none of the images of {image_set.title}.",
        f"The {len(examples)} patches, among the {len(image_set) - len(skipped):,} images of {image_set.title}, "
        "where the unit's activation is highest (one per image); each is the part of the image that one pixel "
        "of the layer looks at.",
    )
else:
    images = cached.session_images(selection)
    examples = cached.unit_examples(model_key, model, tuple(images), images, layer, channel, EXAMPLE_COUNT)
    show_examples(
        examples, cached.image_title, "This unit fires on none of the sample photos or your images.",
        f"The {len(examples)} patches, among the {len(images)} sample photos and your uploads, where "
        "the unit's activation is highest (at most two per photo); each is the part of the photo "
        "that one pixel of the layer looks at.",
    )

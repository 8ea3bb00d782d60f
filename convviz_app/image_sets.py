"""The session's set of images, shared by the Dataset and One-unit pages, and the long job over it.

A session has at most one set (`convviz_core.inputs.image_sets.ImageSet`):
the ZIP uploaded on either page, or the local folder named on the Dataset
page. It lives in the session state, not in a widget, so it stays when the
user moves to another page (Streamlit forgets a widget's file once its page
is left). It holds the files' bytes once; nothing is decoded until a job
reads the images one by one.
"""

import streamlit as st

from convviz_app import cached, comparison
from convviz_core import InputError
from convviz_core.inputs.image_sets import image_set_from_folder, image_set_from_zip
from convviz_core.models.sources import store_shared_file
from convviz_core.remote_jobs import UPLOADS_FOLDER

# The largest ZIP either page takes (Streamlit's upload limit, in MB).
MAX_ZIP_MB = 200
# A set's job may run this long per image (about 25 ms an image on 2 cores
# for EfficientNet-Lite0; the margin is for a busy server or a larger model),
# when that is more than the pool's limit for one job.
SECONDS_PER_IMAGE_LIMIT = 0.25
SET_KEY = "convviz_image_set"
_ORIGIN_KEY = "convviz_image_set_origin"
_FAILED_KEY = "convviz_image_set_failures"


def current_set():
    """The session's `ImageSet`, or None."""
    return st.session_state.get(SET_KEY)


def forget_set():
    """Drops the session's set (a button's callback)."""
    for key in (SET_KEY, _ORIGIN_KEY, _FAILED_KEY):
        st.session_state.pop(key, None)


def _remember(origin, read):
    if st.session_state.get(_ORIGIN_KEY) == origin and SET_KEY in st.session_state:
        return st.session_state[SET_KEY]
    image_set = read()
    forget_set()
    st.session_state[SET_KEY] = image_set
    st.session_state[_ORIGIN_KEY] = origin
    return image_set


def set_from_upload(upload):
    """Makes an uploaded ZIP the session's set (read once per uploaded file) and returns it.

    Raises:
        InputError: If the file is not a ZIP of images or breaks the archive
            limits (`convviz_core.reports.archive`); the session's set is
            then left as it was.
    """
    data = upload.getvalue()
    file_id = getattr(upload, "file_id", None)
    origin = ("zip", file_id if file_id is not None else cached.content_hash(data))

    def read():
        image_set = image_set_from_zip(data, title=upload.name)
        if getattr(cached.job_pool(), "runs_remote_calls", False):
            # A queue's workers explain the set: they read the archive from the shared cache.
            store_shared_file(UPLOADS_FOLDER, data, ".zip")
        return image_set

    return _remember(origin, read)


def set_from_folder(folder):
    """Makes a local folder the session's set (listed once per path) and returns it.

    Raises:
        InputError: If there is no such folder or no image in it.
    """
    return _remember(("folder", folder), lambda: image_set_from_folder(folder))


def set_title(image_set):
    """How the pages name a set: "your set (1,000 images)"."""
    count = len(image_set)
    return f"your set ({count:,} image{'s' if count != 1 else ''})"


def unit_examples_of_set(model_key, model, image_set, layer_name, channel, count):
    """The patches of the session's set where one unit fires most, computed in the job pool.

    Computed once per (model, layer, channel, set digest) in the shared cache;
    a set that holds no readable image is refused at once on later runs.

    Returns:
        ([`Example`] strongest first, [(name, message)] of the skipped images).
        When the queue is full the page shows a "Wait in line" button and stops.

    Raises:
        InputError: When none of the set's images can be read.
        JobCancelled: When the user cancelled the search.
    """
    args = (model_key, model, image_set.digest, image_set, layer_name, channel, count)
    key = ("unit-set", model_key, image_set.digest, layer_name, int(channel), count)
    failures = st.session_state.setdefault(_FAILED_KEY, {})
    if key in failures:
        raise failures[key]
    time_limit = max(cached.JOB_TIME_LIMIT, SECONDS_PER_IMAGE_LIMIT * len(image_set))
    try:
        return comparison.run_long_job(
            key,
            lambda progress: cached.set_examples(*args, _progress=progress),
            f"Looking for the unit in {len(image_set):,} images",
            found=cached.set_examples.lookup(*args),
            time_limit=time_limit,
        )
    except InputError as error:
        failures[key] = error
        raise

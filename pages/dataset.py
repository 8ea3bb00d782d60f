"""Dataset: explanations of a whole set of images, the methods ranked, the report as a ZIP.

Upload a ZIP of images (or, on a local server with `CONVVIZ_LOCAL_FOLDERS=1`,
name a folder); every image is explained by the chosen CAM methods and each
map scored (deletion/insertion, Average Drop, chance, optionally ROAD) in the
server's job pool. Then: the method leaderboard, the images (misclassified and
worst explained first), the confusions when labels are given, and the same
report files the `convviz explain` command writes.
"""

import collections
import functools
import os

import streamlit as st

from convviz_app import cached, comparison, image_sets
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.cam.methods import CAM_METHODS, FAST_METHODS
from convviz_core.jobs import JobCancelled, RemoteCall
from convviz_core.metrics.road import DEFAULT_FRACTIONS
from convviz_core.reports.dataset_report import explain_dataset
from convviz_core.reports.summary import image_table, leaderboard, parse_labels

hand_over_to_app()

# A local server may read folders; a public one must not (off by default).
LOCAL_FOLDERS_VARIABLE = "CONVVIZ_LOCAL_FOLDERS"
RESULT_KEY = "dataset_result"
REQUEST_KEY = "dataset_requested"
PENDING_KEY = "dataset_pending"
FINISHED_KEPT = 8
# A set takes minutes (about 2 s per image on EfficientNet-Lite0 with a chance level, on 2 cores): more than
# the pool's default limit for one job, which is meant for one image's Score-CAM or an atlas.
DATASET_TIME_LIMIT = 4 * 3600


@st.cache_resource
def finished_reports():
    """Reports finished in the pool, by job key (the last few): a run that was replaced while the
    job ran (the app reruns on many events) finds its result here."""
    return collections.OrderedDict()


def run_report_job(key, function, description):
    """Runs (or joins) the job of `key` and returns its result, kept for later runs too.

    `function` is a function of a progress callback, or a `RemoteCall` for a
    queue's worker (then the result is kept when it comes back).
    """
    finished = finished_reports()
    if key in finished:
        return finished[key]

    def keep(result):
        if result is None:
            return None
        finished[key] = result
        while len(finished) > FINISHED_KEPT:
            finished.popitem(last=False)
        return result

    if isinstance(function, RemoteCall):
        job = RemoteCall(function.target, function.args, function.kwargs, finish=keep)
    else:

        def job(progress):
            return keep(function(progress))

    return comparison.run_long_job(key, job, description, time_limit=DATASET_TIME_LIMIT)


selection = current_selection()
page_intro(
    "Dataset",
    "One image says little about a model. Upload a ZIP of images: each is explained by the methods you "
    "choose, and each map is scored by deleting and revealing the pixels it ranks first, next to random "
    "maps. The leaderboard says which method explains this model best over the whole set; the table "
    "shows the misclassified and the worst-explained images first.",
    selection,
)
model = require_model(selection)
layer = model.default_cam_layer()


def explain_set(sources, names, methods, chance_seeds, road_fractions, labels, progress):
    """The job in this process: every image explained, the report ZIP (`explain_dataset`)."""
    return explain_dataset(model, layer, sources, names, methods, chance_seeds, road_fractions, labels, progress)


upload = st.file_uploader("Images (a .zip)", type=["zip"], max_upload_size=image_sets.MAX_ZIP_MB,
                          key="dataset_zip", help="The One-unit page looks through the same set.")
folder_text = ""
if os.environ.get(LOCAL_FOLDERS_VARIABLE) == "1":
    folder_text = st.text_input("...or a folder on this computer", help="Searched recursively for images.",
                                key="dataset_folder")
# A new upload or folder becomes the session's set; without one, the set uploaded before (here or on the
# One-unit page) stays.
set_error = None
try:
    if folder_text:
        image_set = image_sets.set_from_folder(folder_text)
    elif upload is not None:
        image_set = image_sets.set_from_upload(upload)
    else:
        image_set = image_sets.current_set()
except InputError as error:
    image_set, set_error = None, error
if image_set is not None:
    set_column, forget_column = st.columns([4, 1])
    set_column.caption(f"The set: {image_set.title}, {len(image_set):,} images.")
    forget_column.button("Forget the set", on_click=image_sets.forget_set, key="dataset_forget_set")
labels_file = st.file_uploader("Labels (optional CSV: image,label)", type=["csv"], max_upload_size=5,
                               key="dataset_labels")
methods = st.multiselect("Methods", list(CAM_METHODS), default=list(FAST_METHODS),
                         format_func=comparison.method_title, key="dataset_methods")
left, right = st.columns(2)
with_chance = left.toggle("Chance level (3 random maps per image)", value=True, key="dataset_chance")
with_road = right.toggle("ROAD (about 7 s per map and image)", value=False, key="dataset_road")
# A flag, not the button's value: a rerun of the app (the sidebar may ask for
# one) must not lose the click.
st.button("Explain the set", type="primary", key="dataset_run",
          on_click=st.session_state.__setitem__, args=(REQUEST_KEY, True))

requested = st.session_state.pop(REQUEST_KEY, False)
if set_error is not None and not requested:
    st.error(str(set_error))
if requested:
    try:
        if not methods:
            raise InputError("Choose at least one method.")
        if set_error is not None:
            raise set_error
        if image_set is None:
            raise InputError("Upload a .zip of images first.")
        sources, names, digest = image_set.sources, image_set.names, image_set.digest
        labels = parse_labels(labels_file.getvalue(), model) if labels_file is not None else {}
        chance_seeds = (0, 1, 2) if with_chance else ()
        road_fractions = DEFAULT_FRACTIONS if with_road else None
        key = ("dataset", selection.model_key, digest, tuple(methods), chance_seeds, with_road,
               tuple(sorted(labels.items())))
        source = cached.model_source(selection.model_key, model) if image_set.archive else None
        if source is not None:
            # On a queue's worker: the ZIP went to the shared cache when it became the set.
            job = RemoteCall("convviz_core.remote_jobs:dataset_report", (
                source, image_set.digest, layer, tuple(methods), chance_seeds, road_fractions, labels))
        else:
            job = functools.partial(explain_set, sources, names, methods, chance_seeds, road_fractions, labels)
        st.session_state[PENDING_KEY] = (key, labels, selection.model_key, source is not None)
        kept, archive = run_report_job(key, job, f"explanations of {len(sources)} images")
        st.session_state.pop(PENDING_KEY, None)
        st.session_state[RESULT_KEY] = {"explanations": kept, "archive": archive, "labels": labels,
                                        "model_key": selection.model_key}
    except JobCancelled:
        st.session_state.pop(PENDING_KEY, None)
        st.warning("The computation was cancelled. Run it again to start over.")
    except InputError as error:
        st.session_state.pop(PENDING_KEY, None)
        st.error(str(error))

pending = st.session_state.get(PENDING_KEY)
if pending is not None and not st.session_state.get(REQUEST_KEY):
    # A run replaced the one that started the job: wait for the same job (or take its result).
    key, labels, model_key, remote = pending
    try:
        # A job that returns None joins the job of `key` if it is under way.
        nothing = RemoteCall("convviz_core.remote_jobs:nothing") if remote else lambda progress: None
        outcome = run_report_job(key, nothing, "the explanations")
        if outcome is None:
            st.info("That computation is gone; press **Explain the set** again.")
        else:
            st.session_state[RESULT_KEY] = {"explanations": outcome[0], "archive": outcome[1], "labels": labels,
                                            "model_key": model_key}
    except JobCancelled:
        st.warning("The computation was cancelled. Run it again to start over.")
    except InputError as error:
        st.error(str(error))
    st.session_state.pop(PENDING_KEY, None)

result = st.session_state.get(RESULT_KEY)
if result is None or result["model_key"] != selection.model_key:
    st.info("Upload a ZIP of images and press **Explain the set**.")
    st.stop()

explanations, labels = result["explanations"], result["labels"]
explained = [item for item in explanations if item.error is None]
st.caption(f"{len(explained)} of {len(explanations)} images explained at layer `{layer}`.")

st.subheader("Leaderboard")
board = leaderboard(explanations)


def mean_with_spread(row, name, digits=3):
    if row[name] is None:
        return "—"
    return f"{row[name]:.{digits}f} ± {row[name + '_spread']:.{digits}f}"


def share(value):
    return "—" if value is None else f"{value:.0%}"


st.dataframe(
    [
        {
            "Method": comparison.method_title(row["method"]),
            "Deletion (lower is better)": mean_with_spread(row, "deletion_auc"),
            "Insertion (higher is better)": mean_with_spread(row, "insertion_auc"),
            "Average drop % (lower is better)": mean_with_spread(row, "average_drop", 1),
            "ROAD (higher is better)": mean_with_spread(row, "road_combined"),
            "Beats chance on both": share(row["beats_chance"]),
            "on deletion": share(row["beats_chance_deletion"]),
            "on insertion": share(row["beats_chance_insertion"]),
        }
        for row in sorted(board, key=lambda row: row["deletion_auc"] - row["insertion_auc"])
    ],
    hide_index=True,
)
st.caption("Mean ± standard deviation over the images; methods ordered by insertion minus deletion.")

st.subheader("Images")
rows = image_table(explanations, model, labels)
st.dataframe(
    [
        {
            "Image": row["image"],
            "Photo": getattr(row["explanation"], "thumbnail", None),
            "Grad-CAM": getattr(row["explanation"], "overlay", None),
            "Predicted": row.get("predicted"),
            "Probability": row.get("probability"),
            "True": row.get("true"),
            "Insertion − deletion": row.get("faithfulness"),
            "Error": row["error"],
        }
        for row in rows
    ],
    column_config={
        "Photo": st.column_config.ImageColumn("Photo"),
        "Grad-CAM": st.column_config.ImageColumn("Grad-CAM"),
        "Probability": st.column_config.NumberColumn(format="%.3f"),
        "Insertion − deletion": st.column_config.NumberColumn(format="%.3f"),
    },
    hide_index=True,
    row_height=70,
)
st.caption("Misclassified first (with labels), then the worst explained (lowest insertion − deletion). "
           "Click a column to sort.")

confused = [row for row in rows if getattr(row["explanation"], "confusion", None) is not None]
if labels:
    st.subheader("Confusions")
    if not confused:
        st.write("No image of the labelled ones is misclassified.")
    for row in confused:
        true_overlay, predicted_overlay = row["explanation"].confusion
        left, right = st.columns(2)
        left.image(true_overlay, caption=f"{row['image']}: Grad-CAM for the true class, {row['true']}")
        right.image(predicted_overlay, caption=f"...and for the predicted class, {row['predicted']}")

st.download_button("Download the report (ZIP)", data=result["archive"], file_name="convviz-report.zip",
                   mime="application/zip")

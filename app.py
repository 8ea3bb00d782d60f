"""ConvViz: what a convnet sees, in the browser (Chollet, Deep Learning with Python, §5.4).

    streamlit run app.py

This file is the router: the page configuration, the sidebar every page
shares (model and image), and the navigation between the pages in
`pages/`. The views draw; `convviz_core` computes.
"""

import os
import sys

# TensorFlow's C++ start-up chatter is of no use to the people running the app.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `streamlit run` puts this folder on sys.path; other launchers may not.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import streamlit as st  # noqa: E402

from convviz_app.address import begin_run, lesson_mode  # noqa: E402
from convviz_app.router import run_page, take_over_routing  # noqa: E402

# A fresh server's first run may come from Streamlit's old `pages/` router
# (convviz_app/router.py): hand it to `st.navigation` before anything is drawn.
# `st.navigation` comes first, before the slow imports. Each page file is named
# after its address, so that both routers agree on the page a link opens.
take_over_routing()
PAGES = [
    st.Page("pages/lesson.py", title="Lesson", icon=":material/school:", url_path="lesson"),
    st.Page("pages/activation-maps.py", title="Activations", icon=":material/layers:", url_path="activation-maps", default=True),
    st.Page("pages/filter-patterns.py", title="Filters", icon=":material/texture:", url_path="filter-patterns"),
    st.Page("pages/unit.py", title="One unit", icon=":material/center_focus_strong:", url_path="unit"),
    st.Page("pages/grad-cam.py", title="Grad-CAM", icon=":material/local_fire_department:", url_path="grad-cam"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("pages/live.py", title="Live", icon=":material/videocam:", url_path="live"),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:", url_path="dataset"),
    st.Page("pages/model-summary.py", title="Model", icon=":material/account_tree:", url_path="model-summary"),
]
# A lesson link keeps the class on its page: no navigation, the sidebar folded.
navigation = st.navigation(PAGES, position="hidden" if lesson_mode() else "sidebar")

st.set_page_config(
    page_title="ConvViz",
    page_icon=":material/visibility:",
    layout="wide",
    initial_sidebar_state="collapsed" if lesson_mode() else "expanded",
)

from convviz_app.sidebar import render_sidebar  # noqa: E402  (imports TensorFlow)

begin_run()
render_sidebar()
run_page(navigation)

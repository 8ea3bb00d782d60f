"""ConvViz: what a convnet sees, in the browser (Chollet, Deep Learning with Python, §5.4).

    streamlit run app.py

This file is the router: the page configuration, the sidebar every page
shares (model and image), and the navigation between the five pages in
`views/`. The views draw; `convviz_core` computes.
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

# The page files live in `views/`, not `pages/`: Streamlit runs the first
# script run of a fresh server as an old-style `pages/` app when that folder
# exists, so a deep link (/grad-cam) as a server's very first request showed
# a "Page not found" dialog, and AppTest ran pages without this file.
# `st.navigation` comes first, before the slow imports.
PAGES = [
    st.Page("views/activations.py", title="Activations", icon=":material/layers:", url_path="activation-maps", default=True),
    st.Page("views/filters.py", title="Filters", icon=":material/texture:", url_path="filter-patterns"),
    st.Page("views/unit.py", title="One unit", icon=":material/center_focus_strong:", url_path="unit"),
    st.Page("views/grad_cam.py", title="Grad-CAM", icon=":material/local_fire_department:", url_path="grad-cam"),
    st.Page("views/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("views/model.py", title="Model", icon=":material/account_tree:", url_path="model-summary"),
]
navigation = st.navigation(PAGES)

st.set_page_config(
    page_title="ConvViz",
    page_icon=":material/visibility:",
    layout="wide",
    initial_sidebar_state="expanded",
)

from convviz_app.sidebar import render_sidebar  # noqa: E402  (imports TensorFlow)

render_sidebar()
navigation.run()

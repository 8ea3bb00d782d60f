"""ConvViz: what a convnet sees, in the browser (Chollet, Deep Learning with Python, §5.4).

    streamlit run app.py

This file is the router: the page configuration, the sidebar every page
shares (model and image), and the navigation between the four pages in
`pages/`. The pages draw; `convviz_core` computes.
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

# Each URL path differs from its file's name on purpose, and `st.navigation`
# comes first, before the slow imports: Streamlit runs the first script run
# of a process as an old-style `pages/` app until `st.navigation` is called,
# and such a run would open pages/model.py for the URL /model without this
# file (and so without the sidebar).
PAGES = [
    st.Page("pages/activations.py", title="Activations", icon=":material/layers:", url_path="activation-maps", default=True),
    st.Page("pages/filters.py", title="Filters", icon=":material/texture:", url_path="filter-patterns"),
    st.Page("pages/grad_cam.py", title="Grad-CAM", icon=":material/local_fire_department:", url_path="grad-cam"),
    st.Page("pages/model.py", title="Model", icon=":material/account_tree:", url_path="model-summary"),
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

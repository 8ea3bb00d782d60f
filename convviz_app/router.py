"""One router for every page, whichever of Streamlit's two routers starts the run.

The design keeps the page files in `pages/` beside `app.py`. Streamlit treats
such a folder as an old-style multipage app (each file a page, run without
`app.py`) until some run has called `st.navigation`, which `app.py` does: so
on a fresh server the very first request, a deep link such as `/grad-cam` or a
shared `/unit?model=…`, would run one page file alone, without the page
configuration or the navigation. Streamlit derives a page's address and its
identity (the hash of its URL path) from the file name in the old router and
from `url_path` in `st.navigation`; the page files are named after their
addresses, so both routers agree on which page a request is for. Whichever
script the old router starts (`app.py` or a page file), it calls
`hand_over_to_app()` first: that switches Streamlit to `st.navigation` for
good and reruns, keeping the page and its query parameters, so `app.py`
draws the run.

`PagesManager.uses_pages_directory` is Streamlit's private switch between the
two routers; `tests/test_pages_router.py` names it and fails first when a
Streamlit upgrade changes it.
"""

import threading

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

_RUN = threading.local()


def hand_over_to_app(rerun=True):
    """Switches to `app.py`'s navigation when the old page router started this run.

    Each page file calls it after its imports: a page that the old router
    runs alone reruns, and `app.py` then routes to the same page. `app.py`
    calls it with `rerun=False` before `st.navigation`, which then routes this
    very run (a rerun here would end the run that Streamlit's script health
    check waits for before anything was drawn). Cheap when `app.py` is
    already routing: one attribute read.

    Args:
        rerun: Whether to rerun when the old router started this run.
    """
    if getattr(_RUN, "routed_by_app", False):
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if rerun:
            st.rerun()


def run_page(navigation):
    """Runs the page `st.navigation` chose, marking the run as routed by `app.py`."""
    _RUN.routed_by_app = True
    try:
        navigation.run()
    finally:
        _RUN.routed_by_app = False

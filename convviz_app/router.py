"""One router for every page, whichever of Streamlit's two routers starts the run.

The design keeps the page files in `pages/` beside `app.py`. Streamlit treats
such a folder as an old-style multipage app (each file a page, run without
`app.py`) until some run has called `st.navigation`, which `app.py` does: so
on a fresh server the very first request, a deep link such as `/grad-cam` or a
shared `/unit?model=…`, would run one page file alone, without the page
configuration or the navigation. (`AppTest` even starts every run that way.)

Streamlit derives a page's address and its identity (the hash of its URL
path) from the file name in the old router and from `url_path` in
`st.navigation`; the page files are named after their addresses, so both
routers agree on which page a request is for. Then:

- `app.py` calls `take_over_routing()` first: when the old router started it
  (as the main page), Streamlit switches to `st.navigation` for good and this
  very run goes on to route.
- Each page file calls `hand_over_to_app()` after its imports: when the old
  router started it alone, it runs `app.py` in its place, in this same run
  (so a click that started the run is not lost), and `app.py` routes to this
  same page; then the outer run stops.

`PagesManager.uses_pages_directory` is Streamlit's private switch between the
two routers; `tests/test_pages_router.py` names it and fails first when a
Streamlit upgrade changes it.
"""

import runpy
import threading

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

_RUN = threading.local()


def take_over_routing():
    """Makes `st.navigation` Streamlit's router for good; `app.py` calls it first."""
    PagesManager.uses_pages_directory = False


def hand_over_to_app():
    """Runs `app.py` in place of this page when the old router started the page alone.

    Cheap when `app.py` is routing: one attribute read. A page run outside a
    Streamlit app with a `pages/` folder (a tool running one file) goes on.
    """
    if getattr(_RUN, "routed_by_app", False) or not PagesManager.uses_pages_directory:
        return
    take_over_routing()
    runpy.run_path(get_script_run_ctx().pages_manager.main_script_path, run_name="__main__")
    st.stop()


def run_page(navigation):
    """Runs the page `st.navigation` chose, marking the run as routed by `app.py`."""
    _RUN.routed_by_app = True
    try:
        navigation.run()
    finally:
        _RUN.routed_by_app = False

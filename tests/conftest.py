"""Settings for the whole suite."""

import os

import pytest

# A server computes its default atlases in the background when it starts
# (`convviz_app.cached.warm_up_default_atlases`); in tests that would trace
# graphs and take the CPU while tests count traces and time. Tests that want
# it (the browser test's server) set it back.
os.environ.setdefault("CONVVIZ_WARM_UP", "0")


def _switch_page_as_a_browser_does():
    # A browser drops the address's query parameters when the user opens
    # another page from the navigation (checked in test_e2e_browser.py);
    # AppTest keeps them, so a page would take another page's parameters
    # (convviz_app/address.py) for a link's. Before the first run, the query
    # is the link being opened: it stays.
    from streamlit.testing.v1 import AppTest

    switch_page = AppTest.switch_page

    def switch_page_clearing_the_query(self, page_path):
        if self._tree.children:
            self.query_params.clear()
        return switch_page(self, page_path)

    AppTest.switch_page = switch_page_clearing_the_query


_switch_page_as_a_browser_does()


@pytest.fixture(scope="module")
def private_cache_dir(tmp_path_factory):
    """A module's own CONVVIZ_CACHE_DIR, so its atlases are computed, not found."""
    previous = os.environ.get("CONVVIZ_CACHE_DIR")
    os.environ["CONVVIZ_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["CONVVIZ_CACHE_DIR"]
    if previous is None:
        os.environ.pop("CONVVIZ_CACHE_DIR")
    else:
        os.environ["CONVVIZ_CACHE_DIR"] = previous

"""The page files in `pages/` draw through `app.py`, whichever of Streamlit's routers starts the run.

Streamlit runs a fresh server's first script run (and every run of `AppTest`)
as an old-style `pages/` app; `convviz_app/router.py` hands such runs to
`app.py`'s `st.navigation`. These tests name the private Streamlit switch that
relies on, check that both routers agree on each page's address, and that each
page is drawn once, with the app's page configuration and navigation, when the
old router starts it. The browser tests (`test_e2e_browser.py`) open a deep link
and a shared link as a fresh server's very first request.
"""

import ast
from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import script_runner
from streamlit.source_util import page_icon_and_name
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
TIMEOUT = 120


def app_pages():
    """(file, url_path, title) of every `st.Page` in app.py, read from its source."""
    pages = []
    for node in ast.walk(ast.parse(APP.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            keywords = {keyword.arg: keyword.value.value for keyword in node.keywords if isinstance(keyword.value, ast.Constant)}
            pages.append((node.args[0].value, keywords["url_path"], keywords["title"]))
    return pages


def test_streamlits_private_router_switch_is_where_convviz_expects_it():
    # If this fails after a Streamlit upgrade, adapt convviz_app/router.py.
    assert "uses_pages_directory" in vars(PagesManager)
    assert callable(script_runner._mpa_v1)


def test_every_page_is_a_file_of_pages_named_after_its_address():
    pages = app_pages()
    assert len(pages) >= 6
    assert sorted(str(path.relative_to(ROOT)) for path in (ROOT / "pages").glob("*.py")) == sorted(
        path for path, _, _ in pages
    )
    for path, url_path, _ in pages:
        # The old router's address and page identity come from the file name.
        # (Both routers then hash the same URL path into the page's identity.)
        assert page_icon_and_name(ROOT / path)[1] == url_path, path


@pytest.mark.parametrize("path", sorted(str(path.relative_to(ROOT)) for path in (ROOT / "pages").glob("*.py")))
def test_every_page_hands_over_to_app_right_after_its_imports(path):
    body = ast.parse((ROOT / path).read_text()).body
    statements = [
        node for node in body
        if not isinstance(node, (ast.Import, ast.ImportFrom))
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    first = statements[0]
    assert isinstance(first, ast.Expr) and ast.unparse(first) == "hand_over_to_app()", path
    assert all(isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr)) for node in body[: body.index(first)])


@pytest.mark.parametrize("path,title", [("pages/model-summary.py", "The model, layer by layer"), ("pages/grad-cam.py", "Grad-CAM: where the model looked")])
def test_a_page_started_by_the_old_router_is_drawn_once_through_app_py(path, title):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.switch_page(path).run()
    assert not at.exception, [exception.value for exception in at.exception]
    # Once: the page ran through app.py only, not also alone.
    assert [element.value for element in at.title] == [title]
    # The sidebar was drawn once, by app.py.
    assert len(at.sidebar.selectbox(key="model_choice").options) >= 2
    assert PagesManager.uses_pages_directory is False

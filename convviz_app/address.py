"""Every view has an address: its state in the URL's query parameters, both ways.

Copying the address bar reproduces the picture in another browser: the
sidebar puts the built-in model and the sample photo in the URL, and each page
puts its own controls there (layer, channel, class, method, overlay strength,
pattern method and size, ...), updated on every run as the user moves. A link's
values become the controls' values when the link is opened (or followed inside
the app, like the unit view's links); after that the user's own moves win.

`lesson=1` in a link hides the advanced controls (`lesson_mode()`): the model
picker, the uploads and every control a page marks `advanced`, so a class sees
the picture and one or two sliders, with the values the teacher's link set.
Uploaded photos and models cannot travel in a link; the share panel says so.
"""

import dataclasses
import io
import urllib.parse

import streamlit as st

LESSON_PARAM = "lesson"
# The sidebar's parameters, which every page's address carries.
SIDEBAR_PARAMS = ("model", "image")
_STATE_KEY = "convviz_address"


def lesson_mode():
    """Whether the link asked for a lesson view: the advanced controls hidden."""
    return st.query_params.get(LESSON_PARAM) == "1"


def _state():
    # What this session last wrote for each (page, parameter), and this run's
    # link values that did not fit, with the place to name them.
    return st.session_state.setdefault(_STATE_KEY, {"written": {}, "refused": {}, "notice": None})


def begin_run():
    """Keeps a place at the top of the page to name a link's values that do not fit; `app.py` calls it first."""
    state = _state()
    state["refused"] = {}
    state["notice"] = st.empty()


@dataclasses.dataclass(frozen=True)
class Address:
    """The query parameters of one page (or of the sidebar).

    Attributes:
        page: The page's URL path ("grad-cam"), or "sidebar".
        params: The names of the parameters the page owns. Creating the
            address of a page removes every other page's parameters from the
            URL, so an address holds only what its view uses.
    """

    page: str
    params: tuple = ()

    def __post_init__(self):
        if self.page == "sidebar":
            return
        kept = {*SIDEBAR_PARAMS, *self.params, LESSON_PARAM}
        for name in [name for name in st.query_params if name not in kept]:
            del st.query_params[name]

    def take_link(self, param, key, parse):
        """Before a control: a link's new value for `param` becomes the value of the control `key`.

        A value is taken once, when it differs from what this session last
        wrote for this page's parameter: a link opened, or followed inside the
        app. A value that `parse` refuses (ValueError, KeyError) is left out,
        and `refused_values()` names it.

        Args:
            param: The query parameter.
            key: The session-state key of the control.
            parse: From the parameter's text to the control's value; raises
                ValueError or KeyError for a value the view cannot show.
        """
        text = st.query_params.get(param)
        written = _state()["written"]
        if text is None or written.get((self.page, param)) == text:
            return
        written[(self.page, param)] = text
        try:
            value = parse(text)
        except (ValueError, KeyError):
            _state()["refused"][(self.page, param)] = text
            _show_refused_values()
            return
        st.session_state[key] = value

    def show(self, param, value, text=str):
        """After a control: the address bar holds its value (none for None)."""
        if value is None:
            _state()["written"].pop((self.page, param), None)
            if param in st.query_params:
                del st.query_params[param]
            return
        shown = text(value)
        _state()["written"][(self.page, param)] = shown
        if st.query_params.get(param) != shown:
            st.query_params[param] = shown

    def control(self, param, widget, label, *, key, parse, initial, text=str, advanced=False, **kwargs):
        """A widget whose value travels in the address.

        Args:
            param: The query parameter.
            widget: The Streamlit widget function (`st.selectbox`, a column's
                `slider`, ...).
            label: The widget's label.
            key: The widget's session-state key.
            parse: As for `take_link`.
            initial: The value when neither the link nor the user chose one;
                pass the same to the widget (`index=`, `value=`, `default=`).
            text: From the value to the parameter's text.
            advanced: Hidden in a lesson link, which keeps its value.
            **kwargs: For the widget.

        Returns:
            The control's value.
        """
        self.take_link(param, key, parse)
        if advanced and lesson_mode():
            value = st.session_state.get(key, initial)
        else:
            value = widget(label, key=key, **kwargs)
        self.show(param, value, text)
        return value


def overlay_strength(address, widget, key, initial=0.4):
    """The "Overlay strength" slider of a heatmap over an image, in the address as `alpha`."""
    return address.control(
        "alpha",
        widget,
        "Overlay strength",
        key=key,
        parse=number(0.0, 1.0),
        initial=initial,
        text="{:.2f}".format,
        min_value=0.0,
        max_value=1.0,
        value=initial,
        step=0.05,
    )


def cam_layer(address, widget, model, key, help=None):
    """The "Layer" picker of a CAM view (advanced), in the address as `layer`; the model's default CAM layer first."""
    default = model.default_cam_layer()
    return address.control(
        "layer",
        widget,
        "Layer",
        key=key,
        parse=one_of(model.layer_names),
        initial=default,
        advanced=True,
        options=model.layer_names,
        index=model.layer_names.index(default),
        help=help,
    )


def one_of(options, text=str):
    """A `parse` for a choice: the option whose text is the parameter."""
    by_text = {text(option): option for option in options}

    def parse(value):
        return by_text[value]

    return parse


def integer(low, high):
    """A `parse` for a whole number from low to high (inclusive)."""

    def parse(value):
        number = int(value)
        if not low <= number <= high:
            raise ValueError(value)
        return number

    return parse


def number(low, high):
    """A `parse` for a number from low to high (inclusive)."""

    def parse(value):
        result = float(value)
        if not low <= result <= high:
            raise ValueError(value)
        return result

    return parse


def _show_refused_values():
    # Named as soon as they are refused: a page may stop (`st.stop`) before its end.
    refused = [f"{param}={text}" for (_, param), text in _state()["refused"].items()]
    place = _state()["notice"] or st
    place.warning(
        f"This link's {', '.join(refused)} does not fit this model or view, so the page shows "
        "its default instead. Ask for a new link."
    )


def share_link(base_url, lesson=False):
    """The address of this view: the page's URL and its query parameters."""
    params = {name: value for name, value in st.query_params.to_dict().items() if name != LESSON_PARAM}
    if lesson:
        params[LESSON_PARAM] = "1"
    query = urllib.parse.urlencode(params)
    return f"{base_url}?{query}" if query else base_url


@st.cache_data(max_entries=64, show_spinner=False)
def qr_png(link):
    """A QR code of a link, as PNG bytes, large enough to read from a projector."""
    import qrcode

    picture = qrcode.make(link, box_size=8, border=2)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def share_panel(selection):
    """The sidebar's "Share this view" button: the link, a lesson variant and a QR code.

    Args:
        selection: The sidebar's `Selection`: what cannot travel in a link.
    """
    base_url = st.context.url or ""
    with st.popover("Share this view", icon=":material/share:", width="stretch"):
        lesson = st.checkbox(
            "For a lesson: hide the advanced controls",
            value=lesson_mode(),
            key="share_lesson",
            help="Students then see the picture and one or two sliders, set as you set them.",
        )
        link = share_link(base_url, lesson)
        st.code(link, language=None, wrap_lines=True)
        st.image(qr_png(link), caption="Point a phone's camera here", width=240)
        if not selection.is_builtin:
            st.warning(
                "Your own model cannot travel in a link: the link opens the default model. Share the "
                "model file, or choose a built-in model for a link."
            )
        if not selection.image_key.startswith("sample:"):
            st.warning(
                "Your own photo cannot travel in a link: the link opens the sample photo chosen in the "
                "sidebar. Choose a sample photo for a link that shows exactly this picture."
            )

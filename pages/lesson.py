"""Lesson: the book's §5.4 in nine steps, each a live view of the current image.

From the first layer's activations to the sanity check of Grad-CAM, with two
or three sentences per step, Back and Next, and an address per step
(`/lesson?step=4`), so a teacher can send the class to one step. It works on
any image the sidebar gives: a sample photo, an upload or the camera.
"""

import streamlit as st

from convviz_app.address import Address, integer
from convviz_app.lesson_steps import STEPS, draw_step
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model

hand_over_to_app()

STEP_KEY = "lesson_step"

selection = current_selection()
address = Address("lesson", ("step",))
address.take_link("step", STEP_KEY, integer(1, len(STEPS)))
number = st.session_state.get(STEP_KEY, 1)
address.show("step", number)
step = STEPS[number - 1]

page_intro(f"{number}. {step.title}", step.text, selection)
model = require_model(selection)
st.progress(number / len(STEPS), text=f"Step {number} of {len(STEPS)} · {step.book}")


def go_to(target):
    st.session_state[STEP_KEY] = target


back_column, next_column, _ = st.columns([1, 1, 4])
back_column.button(
    "Back", icon=":material/arrow_back:", disabled=number == 1, on_click=go_to, args=(number - 1,),
    width="stretch",
)
next_column.button(
    "Next", icon=":material/arrow_forward:", type="primary", disabled=number == len(STEPS),
    on_click=go_to, args=(number + 1,), width="stretch",
)
draw_step(step, selection)

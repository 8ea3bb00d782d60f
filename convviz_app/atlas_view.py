"""Showing an atlas that may still be computing: the progress bar, the queue and "Wait in line".

The Filters page and the unit view ask the server's one atlas cache for
patterns the same way; this is that way, so the two cannot drift apart.
"""

import streamlit as st

from convviz_app import cached
from convviz_core.features import atlas_service as service
from convviz_core.jobs import Priority, QueueFull, wait_for


def show_atlas(model, request, builtin, priority=Priority.NORMAL):
    """Submits an atlas request for this session and waits for it, drawing its progress.

    When the server's queue is full, the page says how many computations are
    ahead and offers a "Wait in line" button, then stops; after a click the
    same request queues anyway.

    Args:
        model: The `VisionModel`.
        request: An `AtlasRequest` (from `atlas_service`).
        builtin: Whether the model is a built-in one (its atlases go to disk).
        priority: From `atlas_service.atlas_priority`.

    Returns:
        (`JobTicket`, `Atlas`).

    Raises:
        InputError, JobCancelled: What the computation raised.
    """
    wait_key = f"wait_in_line:{request.key}"
    try:
        ticket = service.submit_atlas(
            cached.atlas_store(),
            model,
            request,
            builtin=builtin,
            session_id=cached.current_session_id(),
            priority=priority,
            wait_in_line=bool(st.session_state.get(wait_key)),
            # An uploaded model's atlas goes to a queue's worker when there is one.
            source=None if builtin else cached.model_source(None, model),
        )
    except QueueFull as full:
        st.warning(str(full))
        st.button("Wait in line", type="primary", key=f"button:{wait_key}",
                  on_click=st.session_state.__setitem__, args=(wait_key, True))
        st.stop()
    if ticket.done():
        return ticket, ticket.result()
    bar = st.progress(0.0, text=service.progress_text(ticket.status(), request)[1])
    atlas = wait_for(ticket, lambda status: bar.progress(*service.progress_text(status, request)))
    bar.empty()
    return ticket, atlas


def unit_link(selection, layer, channel):
    """The query parameters of the unit view's address for one channel (shareable)."""
    parameters = {"layer": layer, "channel": str(int(channel))}
    if selection.is_builtin and selection.model_key:
        parameters["model"] = selection.model_key.removeprefix("builtin:")
    if selection.image_key.startswith("sample:"):
        parameters["image"] = selection.image_key.removeprefix("sample:")
    return parameters

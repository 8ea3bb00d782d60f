"""A browser-less client of a Streamlit server: its websocket protocol, driven from asyncio.

    async with StreamlitClient("http://127.0.0.1:8501") as client:
        await client.run()                                   # open the app's default page
        await client.wait_until(lambda: client.pictures())   # any picture in the main area
        await client.open_page("Grad-CAM")

What Streamlit's frontend does, without drawing anything: it connects to
`/_stcore/stream`, asks for script runs (`BackMsg.rerun_script` with the
widget states it holds and the page it shows), keeps the elements that the
`ForwardMsg` deltas put at their `delta_path`, fetches the pictures they name
(`/media/...`), uploads files through `file_urls_request` and an HTTP PUT, and
sends widget values, button clicks and form submits as widget states. It is
light: a student of `bench_classroom.py` (an upload, four pages, a form, every
picture fetched) cost about 0.08 s of CPU, so many clients can share a
machine with the server they measure.

This is Streamlit's private protocol, as streamlit 1.67.0 (pinned by the lock
`requirements.txt`) speaks it: the protobuf messages, the server's page
routing and the upload handshake were read from that release's server code
(`web/server/starlette/starlette_websocket.py`, `runtime/app_session.py`,
`starlette_routes.py`). Another release may need this file adapted. It adds
no dependency: `websockets` and `h11` (HTTP) are Streamlit's own, pinned in
the same lock.

What it does not do: run Streamlit's JavaScript (components, charts and
frontend files are never loaded), cache messages (it declares no
`cached_message_hashes`, so the server never sends `ref_hash` references), or
follow timers of the frontend (`st.fragment(run_every=...)`: `auto_rerun` is
refused with `ProtocolError`).
"""

import asyncio
import contextlib
import dataclasses
import re
import uuid
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import h11
import websockets.asyncio.client
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import FileUploaderState, UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

MAIN = 0
SIDEBAR = 1
XSRF_COOKIE = "_streamlit_xsrf"
# As patient as a browser with a busy server: as long as the bench lets a page take.
HTTP_TIMEOUT_SECONDS = 300
# A picture the page names is fetched again after a failure (the server may
# have dropped a run's media), at most this many times per address.
MEDIA_ATTEMPTS = 3


class ProtocolError(RuntimeError):
    """The server sent something this client does not follow, or closed the connection."""


@dataclasses.dataclass
class Node:
    """One element or block of the page, where a delta put it.

    Attributes:
        path: The delta path: (root container, index, index, ...); root 0 is
            the main area, 1 the sidebar.
        run_id: The script run that sent it; elements of older runs are stale
            (the frontend greys them out) until a run finishes and clears them.
        element: The `Element` proto, or None for a block.
        block: The `Block` proto, or None for an element.
    """

    path: tuple
    run_id: str
    element: object = None
    block: object = None

    @property
    def kind(self):
        """The element's type ("imgs", "button", ...), or "block"."""
        return self.element.WhichOneof("type") if self.element is not None else "block"

    @property
    def proto(self):
        """The element's inner proto (an `ImageList`, a `Button`, ...), or the `Block`."""
        return getattr(self.element, self.kind) if self.element is not None else self.block


@dataclasses.dataclass(frozen=True)
class Picture:
    """A picture on the page: one image of an `ImageList` element."""

    url: str
    caption: str
    area: int
    current: bool


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """What `http_request` received: the status, the headers (lower-case names) and the body."""

    status: int
    headers: list
    body: bytes


async def http_request(method, url, headers=(), body=b""):
    """One HTTP/1.1 request on a connection of its own (h11 over asyncio streams).

    Returns:
        `HttpResponse` with lower-case header names.

    Raises:
        OSError: When the connection fails.
        h11.ProtocolError: When the answer is not HTTP/1.1.
        TimeoutError: After `HTTP_TIMEOUT_SECONDS`.
    """
    async with asyncio.timeout(HTTP_TIMEOUT_SECONDS):
        return await _http_exchange(method, url, headers, body)


async def _http_exchange(method, url, headers, body):
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or (443 if secure else 80),
                                                   ssl=secure or None)
    try:
        connection = h11.Connection(our_role=h11.CLIENT)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_headers = [("Host", parts.netloc), ("Connection", "close"), *headers]
        if body or method in ("PUT", "POST"):
            request_headers.append(("Content-Length", str(len(body))))
        writer.write(connection.send(h11.Request(method=method, target=target, headers=request_headers)))
        if body:
            writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
        response, chunks = None, []
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if response is None:
            raise ConnectionError(f"no HTTP response from {url}")
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in response.headers]
        return HttpResponse(response.status_code, headers, b"".join(chunks))
    finally:
        writer.close()


def element_text(element):
    """What an element says, as plain text: alerts, markdown, captions, progress and spinner text, labels."""
    kind = element.WhichOneof("type")
    inner = getattr(element, kind)
    for field in ("body", "text", "label", "message"):
        if field in inner.DESCRIPTOR.fields_by_name and getattr(inner, field):
            # Markdown's emphasis and code marks are not part of the text a reader sees.
            return re.sub(r"\*\*|__|`", "", getattr(inner, field))
    return ""


def multipart_body(field, file_name, content_type, data):
    """A multipart/form-data body with one file, as a browser's FormData sends it.

    Returns:
        (body bytes, Content-Type header value).
    """
    boundary = f"----convviz{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{file_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode("utf-8")
    return head + data + f"\r\n--{boundary}--\r\n".encode("ascii"), f"multipart/form-data; boundary={boundary}"


class StreamlitClient:
    """One session of a Streamlit app, driven through the server's websocket: a browser tab without a browser.

    Attributes:
        base_url: The server's address, e.g. "http://127.0.0.1:8501".
        session_id: The server's id of this session (from `new_session`).
        pages: Page title -> `AppPage` proto, from `st.navigation`.
        page_script_hash: The page this client shows: the one it asked for,
            as `st.navigation` resolved it ("" before the first run).
        run_id: The script run whose elements are current.
        run_requested: Whether the client asked for a run that has not
            started yet (until it starts, nothing on the page is current).
        running: Whether a script run is going on.
        finished_runs: How many runs finished successfully.
        version: Grows with every message and every fetched picture;
            `wait_for_change` waits for it to grow.
        element_listeners: Functions called with every new `Node` as it
            arrives (to see what a page says while it computes).
        session_errors: Errors of the session rather than of an element
            (the script did not compile).
    """

    def __init__(self, base_url, fetch_media=True, timezone="UTC", locale="en-US"):
        self.base_url = base_url.rstrip("/")
        self.fetch_media = fetch_media
        self.timezone = timezone
        self.locale = locale
        self.session_id = None
        self.pages = {}
        self.page_script_hash = ""
        self.run_id = None
        # Between asking for a run and its start nothing on the page is current.
        self.run_requested = False
        self._tree_page_hash = None
        self.running = False
        self.finished_runs = 0
        self.version = 0
        self.element_listeners = []
        self.session_errors = []
        self._nodes = {}
        self._widget_states = {}
        self._media = {}
        self._media_attempts = {}
        self._file_url_requests = {}
        self._xsrf_token = None
        # Cookies the server (or a load balancer's sticky route) set, sent
        # back with every request, as a browser does.
        self.cookies = {}
        # The address's query string ("model=small-convnet"), as st.query_params reads it.
        self.query_string = ""
        self._websocket = None
        self._reader = None
        self._failure = None
        self._change = None

    # ------------------------------------------------------------------ connection

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    async def connect(self, timeout=60):
        """Does what the frontend does before its first run: the health check (its XSRF cookie), then the websocket."""
        self._change = asyncio.get_running_loop().create_future()
        health = await http_request("GET", self.base_url + "/_stcore/health", self._cookie_headers())
        if health.status != 200:
            raise ProtocolError(f"/_stcore/health answered {health.status}")
        self._remember_cookies(health)
        self._xsrf_token = self.cookies.get(XSRF_COOKIE)
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self._websocket = await websockets.asyncio.client.connect(
            f"{scheme}://{parts.netloc}{parts.path}/_stcore/stream",
            subprotocols=["streamlit"],
            additional_headers=dict(self._cookie_headers()) or None,
            # Streamlit's messages may be far larger than websockets' default limit of 1 MiB.
            max_size=None,
            # A browser never pings; the server pings, and websockets answers.
            ping_interval=None,
            open_timeout=timeout,
            proxy=None,
        )
        self._reader = asyncio.create_task(self._read(), name="streamlit-client-reader")

    def _remember_cookies(self, response):
        for name, value in response.headers:
            if name == "set-cookie":
                key, _, rest = value.split(";", 1)[0].partition("=")
                self.cookies[key.strip()] = rest.strip()

    def _cookie_headers(self):
        """[("Cookie", ...)] with every cookie kept, or [] when there is none."""
        if not self.cookies:
            return []
        return [("Cookie", "; ".join(f"{key}={value}" for key, value in self.cookies.items()))]

    async def close(self):
        """Closes the websocket (the server then ends the session) and stops fetching pictures."""
        for task in self._media.values():
            task.cancel()
        if self._websocket is not None:
            await self._websocket.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self):
        try:
            async for data in self._websocket:
                message = ForwardMsg()
                message.ParseFromString(data)
                self._handle(message)
                self._changed()
            self._failure = ProtocolError("the server closed the websocket")
        except asyncio.CancelledError:
            self._failure = ProtocolError("the client is closed")
            raise
        except Exception as error:  # noqa: BLE001 -- any failure ends the session; waiters see it
            self._failure = error if isinstance(error, ProtocolError) else ProtocolError(
                f"websocket: {type(error).__name__}: {error}")
        finally:
            for future in self._file_url_requests.values():
                if not future.done():
                    future.set_exception(self._failure)
            self._changed()

    def _changed(self):
        self.version += 1
        change, self._change = self._change, asyncio.get_running_loop().create_future()
        change.set_result(None)

    async def wait_for_change(self, seen_version, timeout):
        """Waits until something arrived after `seen_version` (a value of `version`), at most `timeout` seconds.

        Raises:
            ProtocolError: When the connection ended.
        """
        if self._failure is not None:
            raise self._failure
        if self.version > seen_version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._change), timeout)
        if self._failure is not None:
            raise self._failure

    async def wait_until(self, predicate, timeout):
        """Waits until `predicate()` returns something true, and returns it.

        Raises:
            TimeoutError: After `timeout` seconds.
            ProtocolError: When the connection ended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen = self.version
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"nothing after {timeout} s")
            await self.wait_for_change(seen, remaining)

    # ------------------------------------------------------------------ what the server sends

    def _handle(self, message):
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self._start_run(message)
        elif kind == "navigation":
            self.pages = {page.page_name: page for page in message.navigation.app_pages}
            self.page_script_hash = message.navigation.page_script_hash or self.page_script_hash
        elif kind == "delta":
            self._apply_delta(message)
        elif kind == "script_finished":
            self._finish_run(message)
        elif kind == "session_status_changed":
            self.running = message.session_status_changed.script_is_running
        elif kind == "file_urls_response":
            future = self._file_url_requests.pop(message.file_urls_response.response_id, None)
            if future is not None and not future.done():
                future.set_result(message.file_urls_response)
        elif kind == "ref_hash":
            # The server sends a reference only for hashes the client said it had cached.
            raise ProtocolError(f"a cached-message reference ({message.ref_hash}) though no cache was declared")
        elif kind == "auto_rerun":
            raise ProtocolError("the page asks for timed reruns (st.fragment run_every); this client has no timers")
        elif kind == "page_not_found":
            raise ProtocolError(f"page not found: '{message.page_not_found.page_name}'")
        elif kind == "session_event" and message.session_event.WhichOneof("type") == "script_compilation_exception":
            error = message.session_event.script_compilation_exception
            self.session_errors.append(f"exception: {error.type}: {error.message}"[:300])

    def _start_run(self, message):
        session = message.new_session
        self.session_id = session.initialize.session_id or self.session_id
        if session.page_script_hash != self._tree_page_hash:
            # Another page: what the last one showed is gone at once.
            self._nodes.clear()
            self._tree_page_hash = session.page_script_hash
        self.run_id = message.metadata.run.script_run_id
        self.run_requested = False
        self.running = True
        if not self.pages:
            self.pages = {page.page_name: page for page in session.app_pages}

    def _apply_delta(self, message):
        path = tuple(message.metadata.delta_path)
        delta = message.delta
        if delta.WhichOneof("type") == "new_element":
            # An element replaces whatever was at its path, with everything inside it.
            for other in [other for other in self._nodes if other[:len(path)] == path and other != path]:
                del self._nodes[other]
            self._add_node(path, element=delta.new_element)
        elif delta.WhichOneof("type") == "add_block":
            # A block keeps what was inside (now stale, until the run ends or sends it again).
            self._add_node(path, block=delta.add_block)

    def _add_node(self, path, element=None, block=None):
        node = Node(path, self.run_id, element, block)
        self._nodes[path] = node
        if element is not None:
            if self.fetch_media and node.kind == "imgs":
                for image in element.imgs.imgs:
                    self._fetch_picture(image.url)
            for listener in self.element_listeners:
                listener(node)

    def _finish_run(self, message):
        status = message.script_finished
        finished = message.metadata.run.script_run_id
        if (finished and finished != self.run_id) or self.run_requested:
            # The end of a run that another one replaced.
            return
        if status == ForwardMsg.FINISHED_SUCCESSFULLY:
            # As the frontend does: elements the run did not send again are cleared,
            # and the widgets that are gone lose their values.
            self._nodes = {path: node for path, node in self._nodes.items() if node.run_id == self.run_id}
            active = {node.proto.id for node in self._nodes.values() if self._is_widget(node)}
            self._widget_states = {key: value for key, value in self._widget_states.items() if key in active}
            self.finished_runs += 1
        if status != ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
            self.running = False

    @staticmethod
    def _is_widget(node):
        return node.element is not None and "id" in node.proto.DESCRIPTOR.fields_by_name

    # ------------------------------------------------------------------ pictures

    def _fetch_picture(self, url):
        if not url or url.startswith("data:"):
            return
        task = self._media.get(url)
        if task is not None and not (task.done() and (task.cancelled() or task.exception())):
            return
        if self._media_attempts.get(url, 0) >= MEDIA_ATTEMPTS:
            return
        self._media_attempts[url] = self._media_attempts.get(url, 0) + 1
        task = asyncio.create_task(self._get_media(url))
        task.add_done_callback(self._picture_arrived)
        self._media[url] = task

    def _picture_arrived(self, task):
        if not task.cancelled():
            # Retrieved here, so a failure is no "exception never retrieved": the picture counts as not loaded.
            task.exception()
        self._changed()

    async def _get_media(self, url):
        response = await http_request("GET", urljoin(self.base_url + "/", url.lstrip("/")), self._cookie_headers())
        if response.status != 200:
            raise ProtocolError(f"{url}: HTTP {response.status}")
        return response.body

    def picture_loaded(self, url):
        """Whether the picture at `url` arrived (as a browser's `img.complete`)."""
        if url.startswith("data:"):
            return True
        task = self._media.get(url)
        return task is not None and task.done() and not task.cancelled() and task.exception() is None

    async def picture_bytes(self, url):
        """The bytes of a picture of the page (fetched once per address)."""
        if url.startswith("data:"):
            raise ValueError(f"an inline picture, not fetched: {url[:40]}")
        task = self._media.get(url)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            self._media_attempts[url] = 0
            self._fetch_picture(url)
            task = self._media[url]
        return await asyncio.shield(task)

    # ------------------------------------------------------------------ what the page shows

    def nodes(self, area=None, kind=None, current=True):
        """The page's elements and blocks, in page order.

        Args:
            area: MAIN, SIDEBAR, or None for all.
            kind: An element type ("imgs", "button", "selectbox", ...), "block",
                or None for all.
            current: Only what the current run sent (not stale).
        """
        found = []
        if current and self.run_requested:
            return found
        for path in sorted(self._nodes):
            node = self._nodes[path]
            if area is not None and path[0] != area:
                continue
            if current and node.run_id != self.run_id:
                continue
            if kind is not None and node.kind != kind:
                continue
            found.append(node)
        return found

    def pictures(self, area=MAIN, current=True, loaded=True):
        """The page's pictures, in page order: `Picture`s of its `ImageList` elements.

        Args:
            area: MAIN, SIDEBAR, or None for all.
            current: Only pictures of the current run (not stale).
            loaded: Only pictures whose file arrived.
        """
        return [
            Picture(image.url, image.caption, node.path[0], node.run_id == self.run_id)
            for node in self.nodes(area, "imgs", current)
            for image in node.element.imgs.imgs
            if not loaded or not self.fetch_media or self.picture_loaded(image.url)
        ]

    def texts(self, area=MAIN, current=True):
        """What the page's elements say, as plain text."""
        return [element_text(node.element) for node in self.nodes(area, None, current) if node.element is not None]

    def errors(self):
        """The exceptions and error boxes on the page (all areas, stale ones too, as a browser shows them)."""
        errors = list(self.session_errors)
        for node in self.nodes(current=False):
            if node.kind == "exception":
                errors.append(f"exception: {node.proto.type}: {node.proto.message}"[:300])
            elif node.kind == "alert" and node.proto.format == Alert.ERROR:
                errors.append(f"error box: {node.proto.body}"[:300])
        return errors

    def widget(self, kind, label, area=None, form_id=None):
        """The current widget node of a type whose label contains `label` (case-insensitive).

        Raises:
            LookupError: When the page shows none.
        """
        for node in self.nodes(area, kind):
            if label.lower() in node.proto.label.lower() and (form_id is None or node.proto.form_id == form_id):
                return node
        raise LookupError(f"no {kind} labelled '{label}' on the page")

    def forms(self, area=MAIN):
        """The form ids of the current run's forms, in page order."""
        return [node.block.form.form_id for node in self.nodes(area, "block")
                if node.block.WhichOneof("type") == "form"]

    # ------------------------------------------------------------------ what the client sends

    def _send(self, message):
        if self._failure is not None:
            raise self._failure
        return self._websocket.send(message.SerializeToString())

    async def run(self, page_script_hash=None, triggers=()):
        """Asks for a script run with the widget states the client holds: what the frontend sends on any change.

        Args:
            page_script_hash: The page to run; by default the page shown
                ("" before the first run: the app's default page).
            triggers: One-shot `WidgetState`s (a click) sent with this run only.
        """
        if page_script_hash is not None:
            self.page_script_hash = page_script_hash
        self.run_requested = True
        state = ClientState(query_string=self.query_string, page_script_hash=self.page_script_hash, page_name="")
        state.widget_states.widgets.extend(self._widget_states.values())
        state.widget_states.widgets.extend(triggers)
        state.context_info.timezone = self.timezone
        state.context_info.locale = self.locale
        state.context_info.url = self.base_url + "/"
        state.context_info.is_embedded = False
        await self._send(BackMsg(rerun_script=state))

    async def open_page(self, title):
        """Clicks the navigation link of a page: a run of that page's script hash, all widget states kept.

        Raises:
            LookupError: When the app has no page of that title.
        """
        page = self.pages.get(title)
        if page is None:
            raise LookupError(f"no page '{title}' among {sorted(self.pages)}")
        await self.run(page.page_script_hash)

    async def click(self, button):
        """Clicks a button (a `Node` of kind "button"): a run with its trigger."""
        await self.run(triggers=[WidgetState(id=button.proto.id, trigger_value=True)])

    async def submit_form(self, submit_button, values=()):
        """Fills a form and presses its submit button.

        Args:
            submit_button: The form's submit button (a `Node` of kind "button").
            values: `WidgetState`s of the form's widgets; they stay set, as
                the frontend keeps a submitted form's values.
        """
        for value in values:
            self._widget_states[value.id] = value
        await self.click(submit_button)

    def set_value(self, value):
        """Keeps a widget's value (a `WidgetState`) for every later run, without running."""
        self._widget_states[value.id] = value

    def selected_option(self, selectbox):
        """The option a selectbox (a `Node` of kind "selectbox") shows, as its label; None when empty."""
        held = self._widget_states.get(selectbox.proto.id)
        if held is not None:
            return held.string_value
        if selectbox.proto.set_value:
            return selectbox.proto.raw_value if selectbox.proto.HasField("raw_value") else None
        if selectbox.proto.HasField("default"):
            return selectbox.proto.options[selectbox.proto.default]
        return None

    @staticmethod
    def selectbox_value(selectbox, option):
        """The widget state that chooses `option` (one of its labels) in a selectbox.

        Raises:
            ValueError: When the selectbox has no such option.
        """
        if option not in selectbox.proto.options:
            raise ValueError(
                f"'{option}' is not an option of '{selectbox.proto.label}': {list(selectbox.proto.options)}")
        # In this release a selectbox's value travels as its option's label (`string_value`), not its index.
        return WidgetState(id=selectbox.proto.id, string_value=option)

    async def upload_file(self, uploader, path, content_type="application/octet-stream", timeout=120):
        """Uploads one file with a file uploader (a `Node` of kind "file_uploader") and runs, as the frontend does.

        The frontend asks the server for an upload address (`file_urls_request`),
        PUTs the file there as multipart form data, then sets the uploader's
        widget state to the uploaded file and asks for a run.

        Raises:
            ProtocolError: When the server refuses the upload.
        """
        path = Path(path)
        data = path.read_bytes()
        request_id = uuid.uuid4().hex
        answer = asyncio.get_running_loop().create_future()
        self._file_url_requests[request_id] = answer
        request = BackMsg()
        request.file_urls_request.request_id = request_id
        request.file_urls_request.file_names.append(path.name)
        request.file_urls_request.session_id = self.session_id
        await self._send(request)
        response = await asyncio.wait_for(answer, timeout)
        if response.error_msg or not response.file_urls:
            raise ProtocolError(f"no upload address: {response.error_msg or 'none given'}")
        urls = response.file_urls[0]
        body, body_type = multipart_body("file", path.name, content_type, data)
        headers = [("Content-Type", body_type)]
        if self._xsrf_token:
            headers += [("X-Xsrftoken", self._xsrf_token)]
        headers += self._cookie_headers()
        put = await http_request("PUT", urljoin(self.base_url + "/", urls.upload_url.lstrip("/")), headers, body)
        if put.status not in (200, 204):
            raise ProtocolError(f"upload of {path.name}: HTTP {put.status} {put.body[:200]!r}")
        info = UploadedFileInfo(file_id=urls.file_id, name=path.name, size=len(data))
        info.file_urls.CopyFrom(urls)
        self.set_value(WidgetState(id=uploader.proto.id,
                                   file_uploader_state_value=FileUploaderState(uploaded_file_info=[info])))
        await self.run()

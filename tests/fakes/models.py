"""A scripted model endpoint on loopback for the Codex and Claude Code CLIs.

One HTTP server (``http.server``, one thread per request) speaks two wire formats:

- ``POST /v1/responses``: the OpenAI Responses API as Codex streams it
  (``wire_api = "responses"``): server-sent events ``response.created``,
  ``response.output_item.added``, ``response.output_text.delta``,
  ``response.output_item.done`` and ``response.completed`` with usage.
- ``POST /v1/messages``: the Anthropic Messages API with ``stream: true``:
  ``message_start``, ``content_block_start/delta/stop``, ``message_delta``,
  ``message_stop``.

Each main-loop request (one that offers tools) takes the next step of the
script: :class:`Say` answers with text, :class:`Shell` calls the CLI's shell
tool with a command (the CLI runs it and comes back with the output in the next
request, which takes the next step), :class:`Stall` holds the request open until
:meth:`ScriptedModel.release` or shutdown. Side requests the CLIs make on their
own (titles, quota probes, token counts; recognised by offering no tools) get a
short canned answer and do not use up the script. Every request is recorded.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

#: Answer given to side requests (no tools offered).
SIDE_ANSWER = "ok"


@attrs.frozen
class Say:
    """Answer with ``text`` and end the turn."""

    text: str


@attrs.frozen
class Shell:
    """Call the CLI's shell tool with ``command`` (optionally saying ``text`` first).

    ``wait_ms``: milliseconds the CLI lets the command run before it reports
    back: Codex's ``exec_command`` ``yield_time_ms`` (250 to 30,000, default
    10,000, as its tool schema says; then it reports the output so far and
    leaves the command running), ``timeout_ms`` of its older shell tools,
    Claude Code's Bash ``timeout``. 0: the CLI's default.
    """

    command: str
    text: str = ""
    wait_ms: int = 0


@attrs.frozen
class Stall:
    """Send the response headers, then nothing until released or shut down."""


@attrs.frozen
class Fail:
    """Answer with an HTTP error."""

    status: int = 400
    message: str = "scripted failure"


Step = Say | Shell | Stall | Fail


@attrs.define
class Request:
    """One request the fake received.

    Attributes:
        method: HTTP method.
        path: Request path with query.
        headers: Request headers, lower-case names.
        body: Parsed JSON body (``{}`` when absent or not JSON).
        main: True when it took a script step.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    main: bool = False

    def text(self) -> str:
        """All the request's JSON as text, for ``in`` checks."""
        return json.dumps(self.body)


class ScriptedModel:
    """The scripted endpoint; use as a context manager or call start/stop.

    Args:
        script: Steps served to main-loop requests, in order. When the script
            is used up, further main requests get ``Say("(script ended)")``.
    """

    def __init__(self, script: Sequence[Step]) -> None:
        self.script = list(script)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.stalled = threading.Event()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="scripted-model")

    @property
    def port(self) -> int:
        """The OS-chosen port on 127.0.0.1."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without the ``/v1`` suffix."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedModel:
        """Serve on a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release stalled requests and close the server."""
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        """Let stalled requests end (they close without a terminal event)."""
        self.released.set()

    def main_requests(self) -> list[Request]:
        """The requests that took script steps, in order."""
        with self.lock:
            return [r for r in self.requests if r.main]

    def next_id(self, prefix: str) -> str:
        """A fresh id such as ``msg_3``."""
        return f"{prefix}_{next(self._ids)}"

    def take(self, request: Request) -> Step:
        """Record a request and return the step that answers it."""
        with self.lock:
            request.main = _offers_tools(request.body)
            self.requests.append(request)
            if not request.main:
                return Say(SIDE_ANSWER)
            if self.script:
                return self.script.pop(0)
            return Say("(script ended)")


def _offers_tools(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and len(tools) > 0


def _handler(model: ScriptedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                value = json.loads(raw) if raw else {}
            except ValueError:
                value = {}
            return value if isinstance(value, dict) else {"_": value}

        def _request(self) -> Request:
            return Request(self.command, self.path,
                           {k.lower(): v for k, v in self.headers.items()}, self._body())

        def do_GET(self) -> None:
            with model.lock:
                model.requests.append(self._request())
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"data": [], "models": [], "object": "list"})
            else:
                self._json(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:
            request = self._request()
            path = self.path.split("?")[0]
            if path.endswith("/responses"):
                self._serve(request, _responses_events)
            elif path.endswith("/messages"):
                if not request.body.get("stream"):
                    with model.lock:
                        model.requests.append(request)
                    self._json(200, _anthropic_message(model, SIDE_ANSWER))
                    return
                self._serve(request, _messages_events)
            else:
                with model.lock:
                    model.requests.append(request)
                self._json(404, {"error": {"message": "not found", "type": "not_found"}})

        def _serve(self, request: Request, render: Any) -> None:
            step = model.take(request)
            if isinstance(step, Fail):
                self._json(step.status, {"error": {"message": step.message,
                                                   "type": "invalid_request_error"}})
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            if isinstance(step, Stall):
                model.stalled.set()
                model.released.wait()
                return
            for name, data in render(model, request, step):
                chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:
                    return

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


# --- OpenAI Responses (Codex) -------------------------------------------------------------

def _shell_call(request: Request, step: Shell) -> tuple[str, str]:
    """Pick the shell tool the CLI offers and build its arguments."""
    names = [t.get("name") or (t.get("function") or {}).get("name")
             for t in request.body.get("tools", []) if isinstance(t, dict)]
    wait: dict[str, int] = {}
    if "exec_command" in names:
        if step.wait_ms:
            wait["yield_time_ms"] = step.wait_ms
        return "exec_command", json.dumps({"cmd": step.command, **wait})
    if step.wait_ms:
        wait["timeout_ms"] = step.wait_ms
    if "shell_command" in names:
        return "shell_command", json.dumps({"command": step.command, **wait})
    return "shell", json.dumps({"command": ["bash", "-lc", step.command], **wait})


def _responses_events(model: ScriptedModel, request: Request,
                      step: Say | Shell) -> Iterator[tuple[str, dict[str, Any]]]:
    response_id = model.next_id("resp")
    yield "response.created", {"type": "response.created",
                               "response": {"id": response_id, "status": "in_progress"}}
    index = 0
    text = step.text
    if text:
        item_id = model.next_id("msg")
        yield "response.output_item.added", {
            "type": "response.output_item.added", "output_index": index,
            "item": {"type": "message", "id": item_id, "role": "assistant", "content": []}}
        half = len(text) // 2
        for part in (text[:half], text[half:]):
            if part:
                yield "response.output_text.delta", {
                    "type": "response.output_text.delta", "item_id": item_id,
                    "output_index": index, "content_index": 0, "delta": part}
        yield "response.output_item.done", {
            "type": "response.output_item.done", "output_index": index,
            "item": {"type": "message", "id": item_id, "role": "assistant",
                     "status": "completed",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]}}
        index += 1
    if isinstance(step, Shell):
        name, arguments = _shell_call(request, step)
        item = {"type": "function_call", "id": model.next_id("fc"),
                "call_id": model.next_id("call"), "name": name, "arguments": arguments,
                "status": "completed"}
        yield "response.output_item.added", {"type": "response.output_item.added",
                                             "output_index": index, "item": item}
        yield "response.output_item.done", {"type": "response.output_item.done",
                                            "output_index": index, "item": item}
    yield "response.completed", {
        "type": "response.completed",
        "response": {"id": response_id, "status": "completed",
                     "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens": 30,
                               "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": 150}}}


# --- Anthropic Messages (Claude Code) -----------------------------------------------------

def _anthropic_message(model: ScriptedModel, text: str) -> dict[str, Any]:
    return {"id": model.next_id("msg"), "type": "message", "role": "assistant",
            "model": "claude-fake", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1}}


def _messages_events(model: ScriptedModel, request: Request,
                     step: Say | Shell) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "message_start", {"type": "message_start", "message": {
        "id": model.next_id("msg"), "type": "message", "role": "assistant",
        "model": str(request.body.get("model") or "claude-fake"), "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}
    index = 0
    if step.text:
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "text", "text": ""}}
        half = len(step.text) // 2
        for part in (step.text[:half], step.text[half:]):
            if part:
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": part}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    stop_reason = "end_turn"
    if isinstance(step, Shell):
        stop_reason = "tool_use"
        yield "content_block_start", {"type": "content_block_start", "index": index,
                                      "content_block": {"type": "tool_use",
                                                        "id": model.next_id("toolu"),
                                                        "name": "Bash", "input": {}}}
        bash: dict[str, Any] = {"command": step.command, "description": "Run the command"}
        if step.wait_ms:
            bash["timeout"] = step.wait_ms
        arguments = json.dumps(bash)
        yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                      "delta": {"type": "input_json_delta",
                                                "partial_json": arguments}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                            "usage": {"output_tokens": 30}}
    yield "message_stop", {"type": "message_stop"}

"""A scripted OpenAI-compatible chat server on loopback, for tests, benchmarks and dry runs.

It is a test double, not a model: it answers ``/v1/chat/completions`` with fixed,
deterministic answers to the synth prompts (recognised by their system message), after
an optional delay, and lets a test inject faults (malformed JSON, empty fields, long
captions, HTTP errors) through a ``responder`` function. It records every request
and the peak number of requests in flight, so tests can check retries and the
concurrency limit. ``cultureclip synth standin`` serves it for a dry run of a config.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cultureclip.core.llm import FEEDBACK_PREFIX, list_prompts, load_prompt


@dataclass
class Reply:
    """A scripted reply: assistant ``content`` with HTTP ``status`` (non-200: ``content`` is the body)."""

    content: str
    status: int = 200
    #: extra response headers (e.g. ``{"Retry-After": "120"}``)
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], "Reply | str"]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def user_text(request: dict[str, Any]) -> str:
    """The text of the request proper: the last user message that is not retry feedback."""
    for message in reversed(request["messages"]):
        text = _text(message["content"])
        if message["role"] == "user" and not text.startswith(FEEDBACK_PREFIX):
            return text
    return ""


@functools.cache
def _system_messages() -> dict[str, str]:
    return {load_prompt(name).system.strip(): name for name in list_prompts()}


def prompt_name(request: dict[str, Any]) -> str | None:
    """Which built-in prompt made the request, by its system message."""
    system = request["messages"][0]["content"] if request.get("messages") else ""
    return _system_messages().get(str(system).strip())


def _field(text: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


@dataclass
class SynthScript:
    """Deterministic answers to the built-in synth prompts.

    ``concepts`` maps ``"ISO2/Category"`` to ``[(concept, features), ...]``; ``twins`` maps a
    concept to ``(twin, ISO2, features)``. Anything not in the tables gets a generic answer.
    """

    concepts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    twins: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    scores: tuple[int, int, int] = (4, 4, 4)

    def __call__(self, request: dict[str, Any]) -> Reply:
        name, text = prompt_name(request), user_text(request)
        if name == "concepts":
            code = re.search(r"\((\w\w)\)", _field(text, "Country")).group(1)  # type: ignore[union-attr]
            category, n = _field(text, "Category"), int(_field(text, "Number of concepts"))
            table = self.concepts.get(f"{code}/{category}") or [
                (f"{category} concept {j} of {code}", f"shape {j} and colour {j}") for j in range(n)
            ]
            answer: dict[str, Any] = {
                "concepts": [
                    {
                        "concept": c,
                        "context": f"A {category.lower()} tradition of {code}.",
                        "features": f,
                    }
                    for c, f in table[:n]
                ]
            }
        elif name == "twins":
            concept = _field(text, "Concept").rsplit(" (", 1)[0]
            twin, country, features = self.twins.get(concept) or (
                f"twin of {concept}",
                "FR",
                "similar shape, other colour",
            )
            answer = {
                "neg_concept": twin,
                "neg_country": country,
                "neg_context": f"The look-alike of {concept} in {country}.",
                "neg_features": features,
            }
        elif name == "captions":
            concept = _field(text, "Concept").rsplit(" (", 1)[0]
            features = _field(text, "Key visual features")
            n = int(_field(text, "Number of captions"))
            feature = " ".join(features.split()[:3])
            answer = {"captions": [f"{concept} with {feature}, view {j}" for j in range(n)]}
        elif name == "bottomup":
            title = _field(text, "Title")
            first_category = _field(text, "Categories").split(",")[0].strip()
            hint = _field(text, "Country hint")
            yes = "generic" not in title.lower()
            answer = {
                "answer": "yes" if yes else "no",
                "category": first_category if yes else None,
                "country": (hint if hint != "unknown" else "JP") if yes else None,
                "context": f"{title} is a local tradition." if yes else "",
                "features": f"the look of {title}" if yes else "",
            }
        elif name == "judge":
            a, c, f = self.scores
            answer = {"authenticity": a, "consistency": c, "fidelity": f}
        else:
            return Reply(
                json.dumps({"error": "the stand-in only knows the built-in synth prompts"}), 400
            )
        return Reply(json.dumps(answer, ensure_ascii=False))


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog of 5 resets bursts of new connections,
    # which a client opening a pool of 16+ keep-alive connections at once produces.
    request_queue_size = 256
    daemon_threads = True


class StandInLLMServer:
    """Serves a responder on ``http://127.0.0.1:<port>/v1``; use as a context manager."""

    # Long because the request handler class is written inline: it is a closure over this
    # server's responder, counters and lock, which http.server gives no other way to reach.
    def __init__(
        self, responder: Responder | None = None, *, delay_s: float = 0.0, port: int = 0
    ) -> None:
        self.responder: Responder = responder or SynthScript()
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers and httpx pools use
            # Headers and body go out in separate writes; with Nagle on, the body waits for
            # the client's delayed ACK (~40 ms) and the stand-in would look slower than set.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # A client that gave up (a timeout under test) needs no answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(
                        200,
                        json.dumps(
                            {"object": "list", "data": [{"id": "stand-in", "object": "model"}]}
                        ),
                    )
                else:
                    self._send(404, '{"error": "not found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, '{"error": "not found"}')
                    return
                with server._lock:
                    server.requests.append(request)
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    reply = server.responder(request)
                except Exception as exc:  # a broken script answers like a broken server
                    reply = Reply(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 500)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if isinstance(reply, str):
                    reply = Reply(reply)
                if reply.status != 200:
                    self._send(reply.status, reply.content, reply.headers)
                    return
                body = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "model": request.get("model", "stand-in"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": "stop",
                        }
                    ],
                }
                self._send(200, json.dumps(body, ensure_ascii=False))

        self._httpd = _Server(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> StandInLLMServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="standin-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandInLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

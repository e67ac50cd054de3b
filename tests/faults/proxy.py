"""
A small fault-injecting HTTP proxy for the fault suite (threads, standard library only).

It listens on ``127.0.0.1`` (a free port), parses each HTTP/1.1 request (keep-alive included),
forwards it to the upstream server on a fresh connection, and writes the answer back. A test
queues fault rules; each request takes the first rule that matches it (method + path regex) and
still has uses left, and the rule decides what happens instead of a plain forward::

    proxy.inject("status", method="GET", path=r"/jobs/[^/]+", times=3, code=503)
    proxy.inject("reset", method="POST", path="/run")        # the server gets it, the client a RST
    proxy.refuse(); ...; proxy.accept()                      # nothing listens: connection refused

Rule kinds (``forward`` says whether the upstream server gets the request first):

- ``pass``: forward normally (a placeholder, to interleave faults with good answers).
- ``status``: answer ``code`` (default 503) with ``body`` (default a JSON error), ``headers``.
- ``html``: answer ``code`` (default 502) with an HTML error page, as nginx does.
- ``non_json``: answer ``code`` (default 200) with a ``body`` that is not JSON.
- ``truncate``: forward, then send the real headers (Content-Length included) with only part
  of the body, and close.
- ``drop``: close the connection without an answer (FIN).
- ``reset``: forward (default), then reset the connection (RST) instead of answering.
- ``delay``: forward, then hold the answer ``seconds`` (the client has usually given up).

Counters: :meth:`count` gives the requests seen from clients or delivered to the upstream server,
per method and path, so a test can assert "exactly one POST /run reached the server". When the
upstream server is down, the proxy answers ``502`` with an HTML page, as a reverse proxy does.

Every loop is bounded: the accept loop polls a stop flag, client sockets time out when idle, a
delay waits on the stop event, and :meth:`stop` closes every socket and joins every thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import select
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
KINDS = frozenset({"pass", "status", "html", "non_json", "truncate", "drop", "reset", "delay"})
#: Whether the upstream server gets the request before the fault, per kind (overridable with forward=).
_FORWARD_DEFAULT = {
    "pass": True, "status": False, "html": False, "non_json": False,
    "truncate": True, "drop": False, "reset": True, "delay": True,
}  # fmt: skip
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_MAX_LINE = 1 << 20  # a 1 MiB request line: long enough to pass a huge job id on to the server
_MAX_BODY = 64 << 20
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip

HTML_PAGE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class Rule:
    """One queued fault: applies to ``times`` requests matching ``method`` and ``path``."""

    kind: str
    method: str | None = None
    path: re.Pattern[str] | None = None
    times: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.fired >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.fullmatch(path) is not None

    @property
    def forward(self) -> bool:
        return bool(self.params.get("forward", _FORWARD_DEFAULT[self.kind]))


@dataclass
class _Request:
    method: str
    target: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def wants_close(self) -> bool:
        connection = next((v for k, v in self.headers if k.lower() == "connection"), "")
        return "close" in connection.lower() or self.version == "HTTP/1.0"

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _ClientGone(Exception):
    """The client closed its side; stop serving this connection."""


class FaultProxy:
    """
    Fault-injecting HTTP proxy in front of ``upstream_port`` on 127.0.0.1.

    :param upstream_port: port of the server behind the proxy.
    :param upstream_timeout: seconds to wait for the upstream's answer (a sync run can be long).
    :param idle_timeout: seconds an idle client connection is kept open.
    """

    def __init__(
        self, upstream_port: int, *, upstream_timeout: float = 60.0, idle_timeout: float = 15.0
    ) -> None:
        self.upstream_port = upstream_port
        self.upstream_timeout = upstream_timeout
        self.idle_timeout = idle_timeout
        self.port = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._upstreams: set[http.client.HTTPConnection] = set()
        self._rules: list[Rule] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._forwarded: Counter[tuple[str, str]] = Counter()
        self.events: list[tuple[str, str, str]] = []  # (method, path, what happened)
        self.connections = 0
        self.authorization: set[str] = set()

    # ---- life cycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="fault-proxy-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join every thread. Safe to call twice."""
        self._stop.set()
        self._close_listener()
        self._close_clients()
        with self._lock:
            upstreams = list(self._upstreams)
        for upstream in upstreams:
            _quiet(upstream.close)
            if upstream.sock is not None:
                _quiet(upstream.sock.shutdown, socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        for thread in list(self._threads):
            thread.join(5)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]

    @property
    def alive_threads(self) -> int:
        return sum(t.is_alive() for t in self._threads) + bool(
            self._accept_thread and self._accept_thread.is_alive()
        )

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse(self) -> None:
        """Stop listening (new connections are refused) and close every open connection."""
        self._close_listener()
        self._close_clients()

    def accept(self) -> None:
        """Listen again on the same port after :meth:`refuse`."""
        if self._listener is None and not self._stop.is_set():
            self._listen()

    @property
    def listening(self) -> bool:
        return self._listener is not None

    # ---- faults and counters -------------------------------------------------------------------

    def inject(
        self, kind: str, *, method: str | None = None, path: str | None = None, times: int = 1, **params: Any
    ) -> Rule:
        """Queue a fault for the next ``times`` requests matching ``method`` and ``path`` (a regex, whole path)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
        rule = Rule(kind, method, re.compile(path) if path is not None else None, times, params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pending(self) -> int:
        """Uses left over all queued rules."""
        with self._lock:
            return sum(r.times - r.fired for r in self._rules)

    def count(self, method: str | None = None, path: str | None = None, *, forwarded: bool = False) -> int:
        """Requests seen from clients (or delivered to the upstream, ``forwarded=True``) matching method and path regex."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            counter = self._forwarded if forwarded else self._seen
            return sum(
                n
                for (m, p), n in counter.items()
                if (method is None or m == method) and (pattern is None or pattern.fullmatch(p))
            )

    # ---- sockets -------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: on Linux it stops the listening at once, even while the accept
            # thread still sits in select() on it (a bare close() would keep it listening until then).
            _quiet(listener.shutdown, socket.SHUT_RDWR)
            _quiet(listener.close)

    def _close_clients(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _quiet(client.shutdown, socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                self._stop.wait(0.02)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                continue  # closed under us by refuse()/stop()
            client.settimeout(self.idle_timeout)
            thread = threading.Thread(
                target=self._serve, args=(client,), name="fault-proxy-client", daemon=True
            )
            with self._lock:
                self.connections += 1
                self._clients.add(client)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        rfile = client.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(rfile)
                if request is None:
                    return
                if not self._handle(client, request) or request.wants_close:
                    return
        except (_ClientGone, OSError, ValueError):
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            _quiet(rfile.close)
            _quiet(client.close)

    # ---- one request ---------------------------------------------------------------------------

    def _handle(self, client: socket.socket, request: _Request) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        key = (request.method, request.path)
        with self._lock:
            self._seen[key] += 1
            auth = request.header("Authorization")
            if auth:
                self.authorization.add(auth)
            rule = next((r for r in self._rules if r.matches(*key)), None)
            if rule is not None:
                rule.fired += 1
        kind = rule.kind if rule else "pass"
        params = rule.params if rule else {}
        response = self._forward(request) if (rule is None or rule.forward) else None
        self._note(request, kind if response is None or response.status != 599 else f"{kind} (upstream down)")
        if response is not None and response.status == 599:  # upstream down: a reverse proxy says 502
            _send(client, _html_response(502))
            return True
        if kind == "pass":
            assert response is not None
            _send(client, response)
            return True
        if kind == "status":
            code = params.get("code", 503)
            body = params.get("body")
            if body is None:
                body = json.dumps(
                    {"ok": False, "error": {"code": "UNAVAILABLE", "message": f"injected {code}"}}
                )
            headers = [
                ("Content-Type", params.get("content_type", "application/json")),
                *params.get("headers", {}).items(),
            ]
            _send(client, _Response(code, _REASONS.get(code, "Error"), headers, _bytes(body)))
            return True
        if kind == "html":
            _send(client, _html_response(params.get("code", 502)))
            return True
        if kind == "non_json":
            code = params.get("code", 200)
            body = params.get("body", "OK\n")
            _send(
                client,
                _Response(code, _REASONS.get(code, "OK"), [("Content-Type", "text/plain")], _bytes(body)),
            )
            return True
        if kind == "truncate":
            assert response is not None
            keep = int(len(response.body) * params.get("fraction", 0.5))
            _send(client, response, body=response.body[:keep])
            _quiet(client.shutdown, socket.SHUT_RDWR)
            return False
        if kind == "drop":
            _quiet(client.shutdown, socket.SHUT_RDWR)
            return False
        if kind == "reset":
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            _quiet(client.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            _quiet(client.close)
            return False
        if kind == "delay":
            if self._stop.wait(float(params.get("seconds", 5.0))):
                return False
            assert response is not None
            try:
                _send(client, response)
            except (_ClientGone, OSError):
                return False
            return True
        raise AssertionError(kind)  # pragma: no cover

    def _note(self, request: _Request, what: str) -> None:
        with self._lock:
            self.events.append((request.method, request.path, what))

    def _forward(self, request: _Request) -> _Response:
        """Send the request to the upstream server; status 599 when it cannot be reached."""
        upstream = http.client.HTTPConnection(HOST, self.upstream_port, timeout=self.upstream_timeout)
        with self._lock:
            self._upstreams.add(upstream)
        try:
            try:
                upstream.connect()
            except OSError:
                return _Response(599, "upstream down", [], b"")
            headers = {
                k: v
                for k, v in request.headers
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            }
            headers["Content-Length"] = str(len(request.body))
            headers["Connection"] = "close"
            upstream.request(request.method, request.target, body=request.body, headers=headers)
            with self._lock:
                self._forwarded[(request.method, request.path)] += 1
            answer = upstream.getresponse()
            body = answer.read()
            kept = [
                (k, v)
                for k, v in answer.getheaders()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            ]
            return _Response(answer.status, answer.reason, kept, body)
        except (OSError, http.client.HTTPException):
            # The upstream broke off after getting the request (e.g. it was restarted mid-call).
            return _Response(599, "upstream broke off", [], b"")
        finally:
            _quiet(upstream.close)
            with self._lock:
                self._upstreams.discard(upstream)


# ---- helpers -----------------------------------------------------------------------------------


def _read_request(rfile: Any) -> _Request | None:
    line = rfile.readline(_MAX_LINE)
    while line in (b"\r\n", b"\n"):
        line = rfile.readline(_MAX_LINE)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {line[:100]!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    while True:
        raw = rfile.readline(_MAX_LINE)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    lowered = {k.lower(): v for k, v in headers}
    if "chunked" in lowered.get("transfer-encoding", "").lower():
        body = _read_chunked(rfile)
    else:
        length = int(lowered.get("content-length", "0") or 0)
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"bad Content-Length {length}")
        body = rfile.read(length) if length else b""
        if len(body) != length:
            raise _ClientGone
    path = target.split("?", 1)[0]
    return _Request(method, target, path, version, headers, body)


def _read_chunked(rfile: Any) -> bytes:
    body = bytearray()
    while len(body) <= _MAX_BODY:
        size = int(rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += rfile.read(size)
        rfile.readline(1024)
    raise ValueError("chunked body too large")


def _html_response(code: int) -> _Response:
    reason = _REASONS.get(code, "Error")
    return _Response(
        code, reason, [("Content-Type", "text/html")], HTML_PAGE.format(code=code, reason=reason).encode()
    )


def _send(client: socket.socket, response: _Response, *, body: bytes | None = None) -> None:
    """Write a response; Content-Length always states the full body, even when ``body`` is shorter."""
    head = [f"HTTP/1.1 {response.status} {response.reason}"]
    head += [f"{k}: {v}" for k, v in response.headers]
    head.append(f"Content-Length: {len(response.body)}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (response.body if body is None else body)
    try:
        client.sendall(data)
    except OSError as err:
        raise _ClientGone from err


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _quiet(func: Any, *args: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        func(*args)

"""Deadlines for slow or silent clients, and room for well-behaved ones, in uvicorn's HTTP/1.1 protocol.

uvicorn closes a kept-alive connection that stays silent after an answer (``timeout_keep_alive``), but puts
no deadline on a connection that never sends a request, nor on headers that trickle in; and its
``limit_concurrency`` counts open connections, so a few hundred idle ones make every other client get 503.
``guarded_protocol`` builds a subclass of uvicorn's h11 protocol (passed to uvicorn as ``http=``) that

- closes a connection whose request headers are not complete ``header_timeout`` seconds after it opened or
  after its previous answer (a 408 when part of a request arrived, nothing when nothing did);
- holds at most ``max_connections`` connections: a new one beyond them closes the connection that has waited
  longest without sending a whole request, so a client that sends its request promptly always finds room;
  when every connection is busy with a request, the new one gets 503 with Retry-After.

The number of requests being handled at once is bounded separately, in the app (``RequestLimit``), so idle
connections never count against it. Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # lenet5 serve --header-timeout: a request's headers must be complete by then
IDLE_TIMEOUT_S = 5.0  # lenet5 serve --idle-timeout: a kept-alive connection with no new request is closed
MAX_CONNECTIONS = 1024  # open connections; fewer when the process may not open that many files
RESERVED_FILES = 64  # file descriptors kept for the server's own files, its worker process, logs
MIN_CONNECTIONS = 8
RETRY_AFTER_S = 1


def _raw_response(status: int, reason: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def connection_limit(wanted: int = MAX_CONNECTIONS) -> int:
    """How many connections the server may hold: ``wanted``, fewer when the file-descriptor limit is lower.
    The soft limit is raised toward the hard one first (a process may do that itself), so a default of 1,024
    descriptors does not cap a service that could have more."""
    try:
        import resource
    except ImportError:  # not POSIX: no descriptor limit to read
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(MIN_CONNECTIONS, min(wanted, soft - RESERVED_FILES))


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> type:
    """A subclass of uvicorn's H11Protocol with a header deadline and a bound on connections that makes room
    by closing the longest-waiting idle one (see the module's docstring). Each call makes a class with its own
    record of waiting connections, so two servers in one process do not share it."""
    if not header_timeout > 0 or max_connections < 1:
        raise ValueError(
            f"need a positive header timeout and at least 1 connection, got {header_timeout}, {max_connections}"
        )
    timed_out = _raw_response(408, "Request Timeout", f"request headers did not arrive within {header_timeout:g} s")
    no_room = _raw_response(
        503,
        "Service Unavailable",
        f"busy: all {max_connections} connections are handling requests; try again shortly",
        f"retry-after: {RETRY_AFTER_S}\r\n",
    )

    class GuardedH11Protocol(H11Protocol):
        # connections with no request in progress, longest-waiting first -> when they started waiting
        waiting: OrderedDict = OrderedDict()
        closed_for_room = 0
        timed_out_count = 0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = None
            self._wait()
            if len(self.connections) > max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # a whole request line and headers have arrived
                self._stop_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms uvicorn's keep-alive timer, may start a pipelined request
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._wait()

        def connection_lost(self, exc) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait(self) -> None:
            """From now on the next request's headers must arrive within header_timeout."""
            self._stop_waiting()
            self._deadline = self.loop.call_later(header_timeout, self._headers_timed_out)
            type(self).waiting[self] = time.monotonic()

        def _stop_waiting(self) -> None:
            deadline = getattr(self, "_deadline", None)
            if deadline is not None:
                deadline.cancel()
                self._deadline = None
            type(self).waiting.pop(self, None)

        def _headers_timed_out(self) -> None:
            self._deadline = None
            type(self).waiting.pop(self, None)
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            type(self).timed_out_count += 1
            self._close(timed_out if self.conn.trailing_data[0] else b"")

        def _make_room(self) -> None:
            """Over the bound: close the connection that has waited longest for its request, else this one."""
            cls = type(self)
            for other in cls.waiting:
                if other is not self:
                    cls.waiting.pop(other)
                    cls.closed_for_room += 1
                    other._close(b"")
                    return
            self._close(no_room)

        def _close(self, answer: bytes) -> None:
            self._stop_waiting()
            if self.transport.is_closing():
                return
            if answer:
                self.transport.write(answer)
            self.transport.close()

    return GuardedH11Protocol

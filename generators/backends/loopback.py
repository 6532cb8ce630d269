"""A deterministic OpenAI-compatible completions server on 127.0.0.1, with injectable faults.

    with LoopbackServer(faults=Faults(rate=0.3, slow_seconds=2.0)) as server:
        cfg = OpenAIConfig(base_url=server.base_url, model=server.model, timeout=0.5)
        ...
        server.stats["drop"], server.stats["ok"]

For the `openai` backend's tests and `bench/generate.py`: it is a real HTTP/1.1 server (the
standard library's threading server, keep-alive) that the real client talks to over a
socket, so timeouts, resets and half-sent bodies are the real thing. It serves only what the
backend uses: `POST /v1/completions` (n=1) and `GET /v1/models`.

A completion is a pure function of (prompt, seed, max_tokens): words drawn from a small
vocabulary by a hash, ending early on their own (`stop`) or at `max_tokens` (`length`); a
token is a word. So a retried request gets the same answer, and a test can recompute every
expected text with `expected_completion`.

Faults are decided per (prompt, seed) and attempt number by a hash, so a run is reproducible;
after `max_faults` failed attempts of one request the next one succeeds, so a client with
enough retries always finishes. Kinds:

- `slow`: answers only after `slow_seconds` (beyond a client's timeout);
- `429`: Too Many Requests with `Retry-After: <retry_after>`; `429-bare`: without the header;
- `500`: Internal Server Error;
- `drop`: sends the headers and half the body, then closes the connection;
- `reset`: closes the connection without answering.

A prompt containing `TOO_LONG` gets vLLM's 400 for a prompt over the context length; with
`api_key` set, a request without `Authorization: Bearer <key>` gets 401.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_KINDS = ("slow", "429", "429-bare", "500", "drop", "reset")
_WORDS = [
    "so",
    "the",
    "sum",
    "is",
    "then",
    "we",
    "add",
    "carry",
    "check",
    "again",
    "wait",
    "that",
    "gives",
    "answer",
    "yes",
    "no",
    "maybe",
    "first",
    "second",
    "next",
    "step",
    "equals",
    "times",
    "minus",
    "plus",
    "over",
    "because",
    "therefore",
]


@dataclass(frozen=True)
class Faults:
    rate: float = 0.0  # chance that an attempt fails, while the request has failures left
    kinds: tuple[str, ...] = FAULT_KINDS
    max_faults: int = 3  # failed attempts per request at most
    slow_seconds: float = 2.0
    retry_after: float = 0.05  # seconds, the 429's header


def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def expected_completion(prompt: str, seed: int, max_tokens: int) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens) the server answers for this request."""
    length = 1 + int(_unit("length", prompt, seed) * 24)
    count = min(length, max_tokens)
    words = [_WORDS[int(_unit("word", prompt, seed, i) * len(_WORDS))] for i in range(count)]
    return " " + " ".join(words), ("stop" if length <= max_tokens else "length"), count


def prompt_tokens(prompt: str) -> int:
    return len(prompt.split())


class LoopbackServer:
    """The server in a background thread; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        model: str = "loopback",
        api_key: str | None = None,
        seconds_per_token: float = 0.0,  # simulated decoding time, for throughput benchmarks
    ) -> None:
        self.faults = faults or Faults()
        self.model = model
        self.api_key = api_key
        self.seconds_per_token = seconds_per_token
        self.stats: Counter[str] = Counter()  # "ok", each fault kind, "requests", "bad_request"
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.served: Counter[tuple[str, int]] = Counter()  # successful answers per request
        self.arrivals: list[float] = []  # monotonic time of each completions request
        self.in_flight = 0
        self.max_in_flight = 0  # most completions requests handled at once
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes slow answers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _decide(self, key: tuple[str, int]) -> str | None:
        with self._lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
        f = self.faults
        if attempt >= f.max_faults or not f.kinds or _unit("fault?", *key, attempt) >= f.rate:
            return None
        return f.kinds[int(_unit("kind", *key, attempt) * len(f.kinds))]

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops the SYNs of a client opening dozens of connections at
    # once, and each dropped SYN costs that request a one-second retransmission.
    request_queue_size = 256
    owner: LoopbackServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timed out, or closed a pooled connection) is part of the
        # game here, not an error to print; anything else still is.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (about 40 ms a request).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats instead
        pass

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, {"error": {"message": message, "type": "error", "code": status}}, headers
        )

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": owner.model, "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        owner = self.server.owner
        with owner._lock:
            owner.stats["requests"] += 1
            owner.arrivals.append(time.monotonic())
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            self._complete(owner)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _complete(self, owner: LoopbackServer) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/completions":
            self._error(404, f"no route {self.path}")
            return
        if owner.api_key and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._error(401, "invalid API key")
            return
        try:
            req = json.loads(raw)
            prompt, seed, max_tokens = req["prompt"], int(req["seed"]), int(req["max_tokens"])
            model = req["model"]
        except (ValueError, KeyError, TypeError) as err:
            self._error(400, f"bad request body: {err}")
            return
        if model != owner.model:
            self._error(404, f"The model `{model}` does not exist.")
            return
        if "TOO_LONG" in prompt:
            owner._count("bad_request")
            self._error(
                400,
                "This model's maximum context length is 2048 tokens. However, you requested "
                f"{max_tokens + 4096} tokens. Please reduce the length of the messages.",
            )
            return
        key = (prompt, seed)
        fault = owner._decide(key)
        text, finish, tokens = expected_completion(prompt, seed, max_tokens)
        payload = {
            "id": f"cmpl-{hashlib.sha256(f'{prompt}:{seed}'.encode()).hexdigest()[:16]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens(prompt),
                "completion_tokens": tokens,
                "total_tokens": prompt_tokens(prompt) + tokens,
            },
        }
        if fault is not None:
            owner._count(fault)
        if fault == "slow":
            owner._stopping.wait(owner.faults.slow_seconds)
        elif fault == "429":
            self._error(429, "rate limited", {"Retry-After": f"{owner.faults.retry_after:g}"})
            return
        elif fault == "429-bare":
            self._error(429, "rate limited")
            return
        elif fault == "500":
            self._error(500, "internal error")
            return
        elif fault == "drop":
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._hang_up()
            return
        elif fault == "reset":
            self._hang_up()
            return
        if owner.seconds_per_token:
            owner._stopping.wait(owner.seconds_per_token * tokens)
        try:
            self._send(200, payload)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up (timed out) before the answer came
        with owner._lock:
            owner.served[key] += 1
        owner._count("ok")

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def main() -> None:
    """`python -m generators.backends.loopback [--seconds-per-token S]`: serve until killed,
    printing the base URL first (benchmarks run the server in a process of its own, so that
    it does not share the client's interpreter lock)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds-per-token", type=float, default=0.0)
    parser.add_argument("--model", default="loopback")
    args = parser.parse_args()
    with LoopbackServer(seconds_per_token=args.seconds_per_token, model=args.model) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

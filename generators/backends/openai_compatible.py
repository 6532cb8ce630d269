"""The `openai` backend: any OpenAI-compatible completions server (`vllm serve`, SGLang, ...).

    backend = OpenAIBackend(OpenAIConfig(base_url="http://127.0.0.1:8000/v1", model="m"))
    results = backend.sample([Request(prompt=text, seed=7, n=4)], Sampling(max_tokens=256))

Each sample is one `POST /v1/completions` with `n=1` and its own seed
(`sample_seed(request.seed, j)`), so a sample is retried alone and does not depend on `n`.
The prompt is sent rendered (`generators.templates`), `max_tokens` always.

What the libraries do, and what is ours:

- HTTP, connection pooling and per-attempt timeouts: the `openai` client (on httpx2), with its
  own retries switched off (`max_retries=0`) so that one policy, below, decides.
- Retries: `tenacity`. Retried: timeouts, dropped or refused connections, 408, 429 and 5xx,
  and a 200 whose body is not a completion. Back-off is exponential with full jitter
  (`backoff_initial` doubling up to `backoff_max`); a `Retry-After` header (seconds or an HTTP
  date) is obeyed when it asks for longer, up to `retry_after_max`.
- Not retried, because the same request cannot succeed: 400, 413 and 422 (a prompt over the
  context length is a 400 in vLLM) fail that request alone, with the server's message; 401,
  403 and 404 (credentials, model name, URL) stop the run with `BackendError`, as do retries
  that run out: what the caller committed before stays, and a rerun resumes.
- Concurrency: at most `concurrency` requests in flight (an asyncio semaphore, held through
  a request's back-off, so a rate-limited server sees fewer requests, not more).
- Rate: at most `requests_per_second` attempts per second over the whole run (`aiolimiter`'s
  leaky bucket, one per backend), retries included.

The client runs on one event loop in a thread of its own, kept for the backend's life: the
rate limit and the connection pool span the whole run, and `sample` works the same whether
or not its caller runs an event loop. Ctrl-C in the caller cancels every request in flight.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import openai
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from generators.backends.base import (
    BackendError,
    Output,
    Progress,
    Request,
    Result,
    Sampling,
    sample_seed,
)
from generators.backends.config import OpenAIConfig
from generators.templates import chat_template_of

T = TypeVar("T")

# Errors about the request itself: the same request would fail again.
_REQUEST_ERRORS = (400, 413, 422)


class _BadResponse(Exception):
    """A 200 whose body is not a usable completion (retried: a proxy or a server hiccup)."""


def retry_reason(exc: BaseException) -> str | None:
    """Why `exc` is worth another attempt (`timeout`, `connection`, `429`, `503`, ...), or None."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return str(status) if status in (408, 429) or status >= 500 else None
    if isinstance(exc, openai.APIResponseValidationError | _BadResponse):
        return "bad_response"
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """The delay a response's `Retry-After` header asks for (delta-seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Wait:
    """Full-jitter exponential back-off, stretched to a server's Retry-After when longer."""

    def __init__(self, cfg: OpenAIConfig) -> None:
        self.backoff = wait_random_exponential(multiplier=cfg.backoff_initial, max=cfg.backoff_max)
        self.retry_after_max = cfg.retry_after_max

    def __call__(self, state: RetryCallState) -> float:
        delay = float(self.backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None:
            delay = max(delay, min(asked, self.retry_after_max))
        return delay


class OpenAIBackend:
    """Completions from an OpenAI-compatible server; safe to call from any one thread."""

    name = "openai"

    def __init__(self, cfg: OpenAIConfig) -> None:
        self.cfg = cfg
        self.model_id = cfg.model
        self.chat_template = chat_template_of(cfg.model_dir) if cfg.model_dir else None
        self.model_hash = cfg.model_hash
        if self.model_hash is None and cfg.model_dir is not None:
            from trainer.init import checkpoint_hash

            self.model_hash = checkpoint_hash(cfg.model_dir)
        self.counters: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="openai-backend", daemon=True
        )
        self._thread.start()
        self._client = self._call(self._open())

    async def _open(self) -> tuple[openai.AsyncOpenAI, AsyncLimiter | None, asyncio.Semaphore]:
        client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url,
            api_key=os.environ.get(self.cfg.api_key_env) or "EMPTY",
            max_retries=0,
            timeout=self.cfg.timeout,
        )
        rps = self.cfg.requests_per_second
        limiter = AsyncLimiter(max_rate=rps, time_period=1.0) if rps else None
        return client, limiter, asyncio.Semaphore(self.cfg.concurrency)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the backend's loop; an interrupt here cancels it there."""
        if self._loop.is_closed():
            coro.close()
            raise BackendError("the openai backend was closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def sample(
        self, requests: Sequence[Request], sampling: Sampling, *, progress: Progress | None = None
    ) -> list[Result]:
        return self._call(self._sample(requests, sampling, progress))

    async def _sample(
        self, requests: Sequence[Request], sampling: Sampling, progress: Progress | None
    ) -> list[Result]:
        async def one_request(request: Request) -> Result:
            jobs = [self._one_sample(request, j, sampling) for j in range(request.n)]
            done = await asyncio.gather(*jobs)
            if progress is not None:
                progress(1)
            errors = [e for e in done if isinstance(e, str)]
            if errors:
                # A request error is about the prompt, so every sample of it shares it.
                return Result(error=errors[0])
            return Result(outputs=[o for o in done if isinstance(o, Output)])

        # A TaskGroup cancels the other requests as soon as one raises (BackendError); the
        # caller gets that one error, not the group.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one_request(r)) for r in requests]
        except BaseExceptionGroup as errors:
            first: BaseException = errors
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [t.result() for t in tasks]

    async def _one_sample(self, request: Request, index: int, sampling: Sampling) -> Output | str:
        client, limiter, slots = self._client
        body: dict[str, Any] = {}
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM and SGLang extension
        self.counters["requests"] += 1

        async def attempt() -> Output:
            if limiter is not None:
                await limiter.acquire()
            response = await client.completions.create(
                model=self.cfg.model,
                prompt=request.prompt,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=list(sampling.stop) or None,
                n=1,
                seed=sample_seed(request.seed, index),
                extra_body=body or None,
            )
            if not response.choices or response.usage is None:
                raise _BadResponse(f"response {response.id!r} has no choice or no usage")
            choice = response.choices[0]
            return Output(
                index=index,
                text=choice.text,
                finish_reason=str(choice.finish_reason),
                prompt_tokens=response.usage.prompt_tokens,
                completion_tokens=response.usage.completion_tokens,
            )

        def count_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            self.counters[f"retry:{retry_reason(exc) if exc else '?'}"] += 1

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: retry_reason(e) is not None),
            stop=stop_after_attempt(self.cfg.max_attempts),
            wait=_Wait(self.cfg),
            before_sleep=count_retry,
            reraise=True,
        )
        async with slots:
            try:
                output: Output = await retrying(attempt)
                return output
            except openai.APIStatusError as exc:
                if exc.status_code in _REQUEST_ERRORS:
                    self.counters["failed"] += 1
                    return f"http_{exc.status_code}: {_server_message(exc)}"
                raise self._run_error(exc) from exc
            except (openai.APIError, _BadResponse) as exc:
                raise self._run_error(exc) from exc

    def _run_error(self, exc: Exception) -> BackendError:
        where = f"{self.cfg.base_url} (model {self.cfg.model!r})"
        if isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403):
            hint = f"check the key in ${self.cfg.api_key_env}"
        elif isinstance(exc, openai.APIStatusError) and exc.status_code == 404:
            hint = "check backend.openai.base_url (it ends in /v1) and the served model name"
        else:
            hint = (
                f"gave up after {self.cfg.max_attempts} attempts; is the server up? "
                "Committed shards are kept: rerun to resume"
            )
        status = getattr(exc, "status_code", None)
        what = f"HTTP {status}" if status else type(exc).__name__
        return BackendError(f"{where}: {what}: {_server_message(exc)}; {hint}")

    def close(self) -> None:
        if self._loop.is_closed():
            return
        client = self._client[0]
        asyncio.run_coroutine_threadsafe(client.close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_message(exc: BaseException) -> str:
    """The server's own words when it sent JSON with a message, else the exception's."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str) and message:
            return message[:300]
    return str(exc)[:300]

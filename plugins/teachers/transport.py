"""Calls to any LLM through litellm: async with a concurrency and a requests-per-minute limit, a per-call timeout,
exponential backoff with jitter on 429 (Retry-After honoured), 5xx, dropped connections and timeouts, and every
request priced and paid for through the budget gate before it is sent."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import email.utils
import json
import os
import queue
import random
import socket
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kdstudio.errors import KdError
from kdstudio.interfaces import SpendGate
from kdstudio.secrets import remember as remember_secret

T = TypeVar("T")
R = TypeVar("R")


def litellm_module() -> Any:
    """litellm, imported on first use (it costs seconds) and kept offline: its price table is the bundled one."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Requests cancelled because the run stopped leave litellm coroutines unawaited: that is the point, not news.
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


@dataclass(frozen=True)
class Limits:
    concurrency: int = 8
    rpm: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens; `known` is False when neither the user nor litellm's table gave a price."""

    usd_in: float
    usd_out: float
    source: str
    known: bool

    @classmethod
    def resolve(cls, model: str, price_in: float | None, price_out: float | None) -> Pricing:
        if price_in is not None or price_out is not None:
            return cls(price_in or 0.0, price_out or 0.0, "--price-in/--price-out", True)
        litellm = litellm_module()
        try:
            cost_in, cost_out = litellm.cost_per_token(model=model, prompt_tokens=1_000_000,
                                                       completion_tokens=1_000_000)
        except Exception:
            return cls(0.0, 0.0, f"unknown: {model} is not in litellm's price table (give --price-in/--price-out)",
                       False)
        return cls(float(cost_in), float(cost_out), "litellm price table", True)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.usd_in + tokens_out * self.usd_out) / 1e6


@dataclass
class Completion:
    contents: list[str]
    logprobs: list[list[dict[str, Any]] | None]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    attempts: int
    latency_s: float
    retries: dict[str, int] = field(default_factory=dict)  # tries that failed and were retried, by cause


class CallFailed(Exception):
    """A request that did not get an answer; `transient` when another try later may well succeed."""

    def __init__(self, message: str, *, transient: bool, attempts: int, cost_usd: float = 0.0,
                 retries: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.attempts = attempts
        self.cost_usd = cost_usd
        self.retries = retries or {}


class BudgetRefused(Exception):
    """The gate would not reserve the money for the next request: nothing was sent."""


class _RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart."""

    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_slot = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            start = max(now, self.next_slot)
            self.next_slot = start + self.interval
        await asyncio.sleep(start - now)


def retry_after_s(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None),
                                                                        "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


class Transport:
    """One model's requests. `complete` runs on the shared event loop; see `run_all` for the sync side."""

    def __init__(self, model: str, api_base: str | None, api_key_env: str | None, limits: Limits,
                 pricing: Pricing) -> None:
        self.model = model
        self.api_base = api_base or None
        self.api_key_env = api_key_env or None
        self.limits = limits
        self.pricing = pricing
        self._semaphore: asyncio.Semaphore | None = None
        self._limiter: _RateLimiter | None = None
        self._answered = False  # once the server has answered, a connection failure is passing, not a wrong address

    def _api_key(self) -> str | None:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise KdError(f"the environment variable {self.api_key_env} is empty",
                              f"export {self.api_key_env}=... (keys are read from the environment only)")
            remember_secret(key)
            return key
        # A local OpenAI-compatible server wants some key; a cloud provider's own variable is read by litellm.
        return "sk-local" if self.api_base else None

    def check_ready(self) -> None:
        """What can be known without sending anything: the key is there, and litellm knows the provider."""
        litellm = litellm_module()
        try:
            litellm.get_llm_provider(self.model, api_base=self.api_base)
        except Exception:
            raise KdError(f"litellm cannot tell which provider serves the model {self.model!r}",
                          "give a litellm model string such as openai/gpt-4o-mini or ollama/llama3.1, and "
                          "--api-base for a local server") from None
        self._api_key()
        if self.api_base or self.api_key_env:
            return
        missing = (litellm.validate_environment(model=self.model) or {}).get("missing_keys") or []
        if missing:
            raise KdError(f"no API key for {self.model}: {', '.join(missing)} is not set",
                          f"export {missing[0]}=... (keys are read from the environment only), or give "
                          "--teacher-option api_key_env=NAME")

    def access(self) -> str:
        """Where the key comes from, in words (never the key)."""
        if self.api_key_env:
            return f"its key comes from ${self.api_key_env}"
        if self.api_base:
            return (f"{self.api_base} is sent a placeholder key, since no api_key_env names one (give "
                    "--teacher-option api_key_env=NAME if the server wants a real key)")
        return f"its key for {self.model} is in the environment, where litellm looks for it"

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return int(litellm_module().token_counter(model=self.model, messages=messages))

    @staticmethod
    def prompt_token_bound(messages: list[dict[str, Any]], params: dict[str, Any]) -> int:
        """A prompt-token count no provider with a byte-level tokenizer can exceed: every token of a message is at
        least one byte of it, the chat template adds a few tokens per message (8 allowed), and the response schema,
        which providers add to the prompt, is at most its compact JSON's bytes. A local token count would only be an
        estimate, and a provider's own count can beat it."""
        content = sum(len(str(m.get("content") or "").encode("utf-8")) + len(str(m.get("role", "")))
                      for m in messages)
        schema = params.get("response_format")
        schema_bytes = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode()) if schema else 0
        return content + 8 * len(messages) + schema_bytes + 16

    def worst_case_usd(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> float:
        completion = int(params.get("max_tokens", 256)) * int(params.get("n", 1))
        return self.pricing.cost(self.prompt_token_bound(messages, params), completion)

    async def complete(self, messages: list[dict[str, Any]], params: dict[str, Any], gate: SpendGate) -> Completion:
        litellm = litellm_module()
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limits.concurrency)
            self._limiter = _RateLimiter(self.limits.rpm)
        api_key = self._api_key()  # a missing key is the user's to fix, not a failed call
        reserve = self.worst_case_usd(messages, params)
        attempts = 0
        last_error = ""
        retries: dict[str, int] = {}
        async with self._semaphore:
            while True:
                reserved = gate.reserve(reserve)
                while not reserved and gate.fits_later(reserve):
                    await asyncio.sleep(0.02)  # the answers in flight settle below their worst case
                    reserved = gate.reserve(reserve)
                if not reserved:
                    if attempts:
                        raise CallFailed(f"stopped (budget reached or run interrupted) while retrying after: "
                                         f"{last_error}", transient=True, attempts=attempts, retries=retries)
                    raise BudgetRefused()
                await self._limiter.wait()  # type: ignore[union-attr]
                attempts += 1
                started = time.perf_counter()
                try:
                    response = await litellm.acompletion(
                        model=self.model, messages=messages, api_base=self.api_base, api_key=api_key,
                        timeout=self.limits.timeout_s, num_retries=0, max_retries=0,
                        # A provider without logprobs or JSON schemas gets the request without them, not an error.
                        drop_params=True, **params)
                except Exception as exc:
                    gate.settle(reserve, 0.0)
                    try:
                        delay, last_error, cause = self._classify(exc, attempts)
                    except CallFailed as failed:
                        failed.retries = retries
                        raise
                    retries[cause] = retries.get(cause, 0) + 1
                    await asyncio.sleep(delay)
                    continue
                self._answered = True
                usage = getattr(response, "usage", None)
                tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
                tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
                cost = self.pricing.cost(tokens_in, tokens_out)
                gate.settle(reserve, cost)
                contents, logprobs = [], []
                for choice in response.choices:
                    contents.append(choice.message.content or "")
                    lp = getattr(choice, "logprobs", None)
                    content = getattr(lp, "content", None) if lp is not None else None
                    logprobs.append([_plain(t) for t in content] if content else None)
                return Completion(contents, logprobs, tokens_in, tokens_out, cost, attempts,
                                  time.perf_counter() - started, retries)

    def _classify(self, exc: Exception, attempts: int) -> tuple[float, str, str]:
        """How long to wait before the next try, the error, and its cause (for the cost report); raises when there
        must not be one."""
        litellm = litellm_module()
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        causes = _causes(exc)
        if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError) or any(
                "credentials" in str(c).lower() and not hasattr(c, "status_code") for c in causes):
            # litellm reports a key the client never had ("Missing credentials") as a 500: it is no server fault.
            raise KdError(f"the provider refused the credentials for {self.model}: {message}",
                          "check the API key in the environment (never in a file or option)")
        if not self._answered and any(isinstance(c, ConnectionRefusedError | socket.gaierror) for c in causes):
            where = self.api_base or f"the provider of {self.model}"
            raise KdError(f"cannot reach {where}: {message}",
                          "start the server, or check --api-base (e.g. http://127.0.0.1:11434/v1)")
        if isinstance(exc, litellm.NotFoundError):
            raise KdError(f"the provider does not know the model {self.model}: {message}",
                          "check --model (a litellm model string, e.g. openai/gpt-4o-mini)")
        transient = isinstance(exc, litellm.RateLimitError | litellm.Timeout | litellm.APIConnectionError
                               | litellm.InternalServerError | litellm.ServiceUnavailableError
                               | litellm.BadGatewayError) or getattr(exc, "status_code", 0) in (408, 409, 425) \
            or (getattr(exc, "status_code", 0) or 0) >= 500
        if not transient:
            raise CallFailed(message, transient=False, attempts=attempts)
        if attempts > self.limits.max_retries:
            raise CallFailed(f"gave up after {attempts} tries: {message}", transient=True, attempts=attempts)
        backoff = min(self.limits.backoff_max_s, self.limits.backoff_s * 2 ** (attempts - 1))
        delay = backoff * random.uniform(0.5, 1.0)  # jitter: concurrent retries must not return in step
        told = retry_after_s(exc) if isinstance(exc, litellm.RateLimitError) else None
        if told is not None:
            delay = max(delay, told)
        return delay, message, _cause(exc, litellm)


def _cause(exc: Exception, litellm: Any) -> str:
    """What a retried try failed on, in the words of the cost report."""
    if isinstance(exc, litellm.RateLimitError):
        return "rate limit (429)"
    if isinstance(exc, litellm.Timeout):
        return "timeout"
    if isinstance(exc, litellm.InternalServerError | litellm.ServiceUnavailableError | litellm.BadGatewayError):
        return "server error (5xx)"
    if isinstance(exc, litellm.APIConnectionError):
        return "connection"
    status = getattr(exc, "status_code", 0) or 0
    return "server error (5xx)" if status >= 500 else f"HTTP {status}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and every exception it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _plain(token: Any) -> dict[str, Any]:
    return {"token": token.token, "logprob": token.logprob,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in (token.top_logprobs or [])]}


class _Loop:
    """One event loop on a daemon thread for the whole process: litellm keeps async HTTP clients per loop, so a
    loop per batch would leave them bound to closed loops."""

    _instance: _Loop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kdstudio-llm", daemon=True)
        self.thread.start()
        atexit.register(self.shutdown)

    def shutdown(self) -> None:
        """Stop the loop before the interpreter tears down: a daemon thread frozen mid-request can hold the import
        lock that litellm's client finalizers then wait for, and the process never exits."""
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Loop()
            return cls._instance.loop


_DONE = object()


def run_all(items: Sequence[T], work: Callable[[T], Awaitable[R]]) -> Iterator[R]:
    """Run `work` over the items concurrently on the shared loop and yield results as they complete. Closing the
    iterator cancels what has not finished."""
    loop = _Loop.get()
    results: queue.Queue[Any] = queue.Queue()

    async def main() -> None:
        async def one(item: T) -> None:
            try:
                results.put(await work(item))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the consumer, who decides
                results.put(exc)

        try:
            await asyncio.gather(*(one(item) for item in items))
        finally:
            results.put(_DONE)

    future = asyncio.run_coroutine_threadsafe(main(), loop)
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Whatever is still in flight is cancelled, and waited for: nothing may go on sending behind the caller.
        future.cancel()
        with contextlib.suppress(BaseException):
            future.result(timeout=10)

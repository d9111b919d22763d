"""The engine thread: one thread owns the continuous batcher; HTTP handlers talk to it through queues.

    engine = EngineThread(lambda: ContinuousBatcher(model, max_batch=16)); engine.start()
    request = await engine.submit(prompt_ids, sampling, seed=0)   # on the server's event loop
    event = await request.events.get()                             # TokenEvent, or the exception that ended it
    engine.cancel(request)                                          # a client went away: free its slot
    engine.close()

    event loop (HTTP handlers)            engine thread (owns the batcher)
    submit ---- ("add", ...) ---> inbox ---> batcher.add -> request id (a Future back to the handler)
    cancel ---- ("cancel", id) -> inbox ---> batcher.cancel
    request.events <--- loop.call_soon_threadsafe(put_nowait) <--- batcher.step() -> TokenEvents

The batcher is not thread-safe and need not be: only this thread calls it, between steps, so the
server depends on its four methods (add, cancel, has_work, step) and on nothing inside it. The thread
blocks on its inbox when there is no work and drains the inbox without blocking between steps, so a new
request joins the running batch at the next step (continuous batching's point). If a step raises, every
request in flight gets that exception and the thread starts over with a fresh batcher: one bad step
costs those requests, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from llmlab.inference.batching import TokenEvent
from llmlab.model.generate import SamplingConfig


class Batcher(Protocol):
    def add(self, prompt: Sequence[int], sampling: SamplingConfig, *, seed: int | None = None) -> int: ...

    def cancel(self, request_id: int) -> None: ...

    def has_work(self) -> bool: ...

    def step(self) -> list[TokenEvent]: ...


@dataclass
class Submitted:
    """A request the engine accepted: its id and the queue its events arrive on."""

    request_id: int
    events: asyncio.Queue[TokenEvent | BaseException] = field(repr=False)


@dataclass(frozen=True)
class _Add:
    prompt: Sequence[int]
    sampling: SamplingConfig
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent | BaseException]
    accepted: Future[int]


@dataclass(frozen=True)
class _Cancel:
    request_id: int


_STOP = object()


class EngineThread:
    def __init__(self, make_batcher: Callable[[], Batcher]) -> None:
        self._make_batcher = make_batcher
        self._inbox: queue.SimpleQueue[_Add | _Cancel | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="llmlab-engine", daemon=True)
        # request id -> where its events go; touched only by the engine thread
        self._routes: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[TokenEvent | BaseException]]] = {}

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the current step; requests still in flight get no more events."""
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout)

    async def submit(self, prompt: Sequence[int], sampling: SamplingConfig, *, seed: int | None = None) -> Submitted:
        """Hand a request to the engine; raises what `batcher.add` raised (a UserError for a bad request)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()
        accepted: Future[int] = Future()
        self._inbox.put(_Add(list(prompt), sampling, seed, loop, events, accepted))
        try:
            return Submitted(await asyncio.wrap_future(accepted), events)
        except asyncio.CancelledError:  # the client left while the engine was adding it: cancel it there too
            accepted.add_done_callback(self._cancel_if_added)
            raise

    def _cancel_if_added(self, accepted: Future[int]) -> None:
        if not accepted.cancelled() and accepted.exception() is None:
            self._inbox.put(_Cancel(accepted.result()))

    def cancel(self, request: Submitted) -> None:
        """Stop generating for `request` (a no-op once it has finished); its queue gets no more events."""
        self._inbox.put(_Cancel(request.request_id))

    # ------------------------------------------------------------------ the engine thread

    def _run(self) -> None:
        batcher = self._make_batcher()
        while True:
            # block only when idle: a busy engine takes what arrived and steps again
            messages = [self._inbox.get()] if not batcher.has_work() else []
            while True:
                try:
                    messages.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for message in messages:
                if message is _STOP:
                    return
                self._handle(batcher, message)
            if not batcher.has_work():
                continue
            try:
                events = batcher.step()
            except Exception as error:  # a failed step fails the requests in it, not the server
                for loop, events_queue in self._routes.values():
                    self._post(loop, events_queue, error)
                self._routes.clear()
                batcher = self._make_batcher()
                continue
            for event in events:
                route = self._routes.get(event.request_id)
                if route is None:  # cancelled by its client: nobody is listening
                    continue
                if event.finished:
                    del self._routes[event.request_id]
                self._post(*route, event)

    def _handle(self, batcher: Batcher, message: object) -> None:
        if isinstance(message, _Add):
            if not message.accepted.set_running_or_notify_cancel():  # its handler was cancelled first
                return
            try:
                request_id = batcher.add(message.prompt, message.sampling, seed=message.seed)
            except Exception as error:  # reported to the handler that submitted it
                message.accepted.set_exception(error)
                return
            self._routes[request_id] = (message.loop, message.events)
            message.accepted.set_result(request_id)
        elif isinstance(message, _Cancel) and self._routes.pop(message.request_id, None) is not None:
            batcher.cancel(message.request_id)

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[TokenEvent | BaseException],
              item: TokenEvent | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is shutting down
            loop.call_soon_threadsafe(events.put_nowait, item)

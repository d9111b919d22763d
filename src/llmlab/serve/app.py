"""The OpenAI-compatible HTTP API over the engine thread: /v1/models, /v1/completions, /v1/chat/completions.

    app = create_app(ServedModel.from_loaded("tiny", model, tokenizer, "runs/sft"), engine)

Each request is encoded here (completions: the prompt's text, or its token ids as given; chat: the
messages through the model's chat template, so user text never becomes a special token), handed to
the engine, and its tokens are decoded as they come (`StreamDecoder`: text only once its UTF-8 is
complete) through the stop strings (`StopStrings`). A response either streams server-sent events
(`data: {chunk}` ... `data: [DONE]`) or answers once with the whole text. A client that disconnects
cancels its request in the engine: a streaming one when its stream is torn down, a waiting one by a
poll of the connection every POLL_S seconds.

Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with a 4xx status for what the
client got wrong (bad JSON or field: 400, unknown model or route: 404, a prompt longer than the
context: 400 context_length_exceeded), 500 if generation itself failed; none of them stops the server.
Follows the OpenAI API reference; left out: logprobs, n > 1, tools, embeddings (protocol.py lists them).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from llmlab.errors import UserError
from llmlab.model.commands import chat_prompt_ids
from llmlab.model.generate import SamplingConfig
from llmlab.serve.engine import EngineThread, Submitted
from llmlab.serve.protocol import APIError, ChatRequest, CompletionRequest, validation_error
from llmlab.serve.stops import StopStrings
from llmlab.tokenizers.base import Tokenizer

POLL_S = 0.5  # how often a non-streaming request checks that its client is still connected
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the room left


@dataclass(frozen=True)
class ServedModel:
    name: str  # the id clients send as "model"
    tokenizer: Tokenizer
    model_dir: str  # where the chat template is looked for (tokenizer_config.json)
    max_seq_len: int
    stop_tokens: tuple[int, ...]  # end-of-text / end-of-turn ids: generation stops after one, unshown


@dataclass(frozen=True)
class Piece:
    """A step of one request as the client sees it: new text, and the finish reason on the last piece."""

    text: str
    finish_reason: str | None  # "stop" (stop token or stop string) | "length" | None while running
    completion_tokens: int


def create_app(served: ServedModel, engine: EngineThread) -> FastAPI:
    app = FastAPI(title="llmlab", summary="an OpenAI-compatible server for one llmlab model")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        e = validation_error(list(error.errors()))
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, error: UserError) -> JSONResponse:
        return JSONResponse(APIError(400, str(error)).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        e = APIError(error.status_code, f"{request.method} {request.url.path}: {error.detail}",
                     code="not_found" if error.status_code == 404 else None)
        return JSONResponse(e.body(), status_code=e.status)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(served.name)]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        _check_model(served, name)
        return _model_card(name)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        _check_model(served, body.model)
        ids = served.tokenizer.encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
        if not ids:
            raise APIError(400, "the prompt encodes to no tokens", param="prompt")
        vocab = served.tokenizer.id_count
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"a prompt token id is outside the vocabulary [0, {vocab})", param="prompt")
        max_new = body.max_tokens if body.max_tokens is not None else COMPLETION_DEFAULT_MAX_TOKENS
        job = await _start(engine, served, body, ids, max_new, request)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served.name}

        def choice(piece: Piece) -> dict[str, Any]:
            return {"index": 0, "text": piece.text, "logprobs": None, "finish_reason": piece.finish_reason}

        return await _respond(job, head, choice, body.stream, body.include_usage)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        _check_model(served, body.model)
        ids = chat_prompt_ids(served.tokenizer, [m.as_llmlab() for m in body.messages], served.model_dir)
        max_new = body.max_new_tokens if body.max_new_tokens is not None else served.max_seq_len - len(ids)
        job = await _start(engine, served, body, ids, max_new, request)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": served.name}
        if not body.stream:

            def message(piece: Piece) -> dict[str, Any]:
                return {"index": 0, "message": {"role": "assistant", "content": piece.text}, "logprobs": None,
                        "finish_reason": piece.finish_reason}

            return await _respond(job, head, message, False, False)
        first = [True]  # the first chunk names the role, as OpenAI's do

        def chunk_choice(piece: Piece) -> dict[str, Any]:
            delta = {"role": "assistant", "content": piece.text} if first[0] else {"content": piece.text}
            first[0] = False
            if piece.finish_reason is not None and not piece.text and "role" not in delta:
                delta = {}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": piece.finish_reason}

        return await _respond(job, {**head, "object": "chat.completion.chunk"}, chunk_choice, True,
                              body.include_usage)

    return app


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmlab"}


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves {served.name!r}",
                       param="model", code="model_not_found")


@dataclass
class _Job:
    pieces: AsyncIterator[Piece]
    prompt_tokens: int
    cancel: Callable[[], None]  # stop the request in the engine (a no-op once it has finished)


async def _start(engine: EngineThread, served: ServedModel, body: CompletionRequest | ChatRequest,
                 ids: list[int], max_new: int, request: Request) -> _Job:
    """Check the request against the context, hand it to the engine; its pieces come from the returned job."""
    if max_new < 1 or len(ids) + max_new > served.max_seq_len:
        raise APIError(400, f"this model's maximum context length is {served.max_seq_len} tokens; the request "
                       f"asks for {len(ids) + max(max_new, 1)} ({len(ids)} in the prompt, {max(max_new, 1)} for "
                       "the completion): shorten the prompt or lower max_tokens",
                       param="max_tokens" if max_new >= 1 else "prompt", code="context_length_exceeded")
    sampling = SamplingConfig(max_new_tokens=max_new, temperature=body.temperature, top_k=body.top_k,
                              top_p=None if body.top_p == 1.0 else body.top_p,
                              repetition_penalty=body.repetition_penalty, stop_tokens=served.stop_tokens,
                              vocab_limit=served.tokenizer.id_count)
    submitted = await engine.submit(ids, sampling, seed=body.seed)
    # a streaming response is cancelled by Starlette when its client leaves; a waiting one must look
    watch = None if body.stream else request.is_disconnected
    return _Job(_pieces(engine, submitted, served, body.stop_strings, watch), len(ids),
                lambda: engine.cancel(submitted))


async def _pieces(engine: EngineThread, submitted: Submitted, served: ServedModel, stop_strings: list[str],
                  disconnected: Callable[[], Awaitable[bool]] | None) -> AsyncIterator[Piece]:
    """The request's text as it is generated, ending with a piece that has the finish reason."""
    decoder, stops, n, finished = served.tokenizer.stream_decoder(), StopStrings(stop_strings), 0, False
    loop = asyncio.get_running_loop()
    next_look = loop.time() + POLL_S
    try:
        while True:
            if disconnected is not None and loop.time() >= next_look:  # every POLL_S, events or not
                if await disconnected():
                    return
                next_look = loop.time() + POLL_S
            try:
                wait = max(next_look - loop.time(), 0.0) if disconnected is not None else None
                event = await asyncio.wait_for(submitted.events.get(), wait)
            except asyncio.TimeoutError:
                continue
            if isinstance(event, BaseException):
                finished = True
                raise APIError(500, f"generation failed: {event}", type="server_error") from event
            text = ""
            if event.token is not None:
                n += 1
                if event.token not in served.stop_tokens:  # the end-of-turn token ends the text, unshown
                    text = decoder.push(event.token)
            if event.finished:
                finished = True
                text += decoder.flush()
            safe, hit = stops.push(text, final=event.finished)
            if hit:
                yield Piece(safe, "stop", n)
                return
            if event.finished:
                reason = "length" if event.finish_reason == "length" else "stop"
                yield Piece(safe, reason, n)
                return
            if safe:
                yield Piece(safe, None, n)
    finally:
        if not finished:  # a stop string, a client gone, or an error: free the engine's slot
            engine.cancel(submitted)


async def _respond(job: _Job, head: dict[str, Any], choice: Callable[[Piece], dict[str, Any]], stream: bool,
                   include_usage: bool) -> dict[str, Any] | StreamingResponse:
    if not stream:
        text, last = [], Piece("", None, 0)
        async for piece in job.pieces:
            text.append(piece.text)
            last = piece
        return {**head, "choices": [choice(Piece("".join(text), last.finish_reason, last.completion_tokens))],
                "usage": _usage(job.prompt_tokens, last.completion_tokens)}

    async def events() -> AsyncIterator[str]:
        last = Piece("", None, 0)
        try:
            async for piece in job.pieces:
                last = piece
                yield _sse({**head, "choices": [choice(piece)]})
        except APIError as error:  # the status line has gone: the error travels as an event
            yield _sse(error.body())
        else:
            if include_usage:
                yield _sse({**head, "choices": [], "usage": _usage(job.prompt_tokens, last.completion_tokens)})
        yield "data: [DONE]\n\n"

    return _Stream(events(), job.cancel)


class _Stream(StreamingResponse):
    """Server-sent events that cancel their request however the response ends: a client that leaves
    before the first chunk tears the response down before `_pieces` ever runs (so its `finally` cannot)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Token counts; completion_tokens includes a stop token the model produced (it was computed)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

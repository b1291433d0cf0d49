"""The gateway's HTTP API (aiohttp), OpenAI-compatible:

    POST /v1/chat/completions   streamed (SSE, ending `data: [DONE]`) or not
    GET  /v1/models             the registry's servable versions
    GET  /health                model, routing table, capture; no key needed, no secret shown

`model` naming a registry version pins it; anything else is routed by the routing table (sticky
per `user`). The completion `id` is the `response_id` of the Response recorded for it (also in the
`x-prefloop-response-id` header) and `model` is the version that answered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from aiohttp import web

from prefloop.auth import AuthSettings, protect
from prefloop.serving.api import (
    AssistantMessage, BadRequest, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta,
    ModelCard, ModelList, Usage, error_body, parse_request,
)
from prefloop.serving.capture import ResponseCapture
from prefloop.serving.generation import Backend, Finish, GenerationError, GenerationJob, SamplingParams, Target
from prefloop.serving.routing_cache import RoutingCache
from prefloop.serving.settings import ServeSettings
from prefloop.serving.versions import NOT_SERVED, VERSION_NAME, RegistryView
from schemas.records import ROUTE_TAG, Response, new_event_id, prompt_hash

log = logging.getLogger("prefloop.serve")

RESPONSE_ID_HEADER = "x-prefloop-response-id"


@dataclass
class Gateway:
    settings: ServeSettings
    backend: Backend
    routing: RoutingCache
    versions: RegistryView
    capture: ResponseCapture

    def choose(self, model: str, user: str | None) -> tuple[Target, str]:
        """The version that answers and how it was chosen; GenerationError 404/503 when none can."""
        record = self.versions.get(model)
        if record is not None:
            if record.status not in NOT_SERVED:
                return self.versions.target(record), "pinned"
            raise GenerationError("not_found", f"model {model} is {record.status.value}; it is not served", status=404,
                                  param="model")
        if VERSION_NAME.fullmatch(model):
            raise GenerationError("not_found", f"model {model} is not in the registry; GET /v1/models lists the servable versions",
                                  status=404, param="model")
        routed = self.routing.route(user)
        if routed is not None:
            record = self.versions.get(routed[0])
            if record is not None:
                return self.versions.target(record), routed[1]
            log.warning("routing table names %s, which the registry does not have; serving production", routed[0])
        production = self.versions.production()
        record = self.versions.get(production) if production else None
        if record is None:
            raise GenerationError("not_ready", "no production version in the registry yet", status=503)
        return self.versions.target(record), "production"


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, message, param, code).model_dump_json(),
                        content_type="application/json", headers=headers)


def generation_error_response(exc: GenerationError, response_id: str | None = None) -> web.Response:
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if response_id:
        headers[RESPONSE_ID_HEADER] = response_id
    code = {"not_found": "model_not_found", "queue_full": "queue_full", "bad_request": None}.get(exc.kind, exc.kind)
    return error_response(exc.status, exc.message, exc.param, code, headers)


# The shared access checks' refusals (prefloop/auth/) as OpenAI's error codes.
_OPENAI_CODES = {"missing_api_key": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}


def _auth_error(status: int, message: str, code: str, headers: dict[str, str]) -> web.Response:
    return error_response(status, message, code=_OPENAI_CODES.get(code, code), headers=headers)


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error is OpenAI's error object, with the right status."""
    gateway = request.app[GATEWAY]
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(gateway.settings)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)


def _too_large(settings: ServeSettings) -> web.Response:
    return error_response(413, f"request body is larger than the gateway's limit of {settings.max_body_bytes} bytes",
                          code="request_too_large")


def prompt_of(request: ChatCompletionRequest) -> tuple[str, str]:
    """(prompt, prompt_id): the prompt is the last user message; the prompt id hashes the whole
    conversation (a one-message conversation hashes as the SDK's default, so both group together)."""
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise BadRequest("messages: at least one user message is needed", "messages")
    prompt = users[-1].text()
    if not prompt.strip():
        raise BadRequest("messages: the last user message is empty", "messages")
    if len(request.messages) == 1:
        return prompt, prompt_hash(prompt)
    return prompt, prompt_hash("\n".join(f"{m.role}: {m.text()}" for m in request.messages))


def sampling_of(request: ChatCompletionRequest, settings: ServeSettings) -> SamplingParams:
    asked = request.requested_max_tokens()
    if asked is not None and asked > settings.max_tokens:
        name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise BadRequest(f"{name}: at most {settings.max_tokens} (the gateway's max_tokens), got {asked}", name)
    return SamplingParams(
        max_tokens=asked or settings.default_max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=request.stops(), seed=request.seed, ignore_eos=request.ignore_eos,
    )


@dataclass
class Exchange:
    """One request on its way through: what was asked, who answers, and what to record."""

    request: ChatCompletionRequest
    target: Target
    route: str
    prompt: str
    prompt_id: str
    response_id: str
    started: float

    def response(self, text: str, error: GenerationError | str | None = None) -> Response:
        tags = dict(self.request.metadata or {})
        tags[ROUTE_TAG] = self.route
        return Response(
            response_id=self.response_id, prompt=self.prompt, response=text, model_version=self.target.version,
            prompt_id=self.prompt_id, user_id=self.request.user or None, tags=tags,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            error=error.recorded if isinstance(error, GenerationError) else error,
        )


def recorded_failure(exc: GenerationError) -> bool:
    """Failures of a version (crash, adapter, timeout, upstream) are recorded; a bad request, a full
    queue or a model still loading are answered without a Response."""
    return exc.status >= 500 and exc.status != 503


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    started = time.monotonic()
    settings = gateway.settings
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        return _too_large(settings)
    body = await request.read()
    try:
        req = parse_request(body)
        prompt, prompt_id = prompt_of(req)
        params = sampling_of(req, settings)
        target, route = gateway.choose(req.model, req.user)
    except BadRequest as exc:
        return error_response(400, exc.message, exc.param)
    except GenerationError as exc:
        return generation_error_response(exc)
    ex = Exchange(req, target, route, prompt, prompt_id, new_event_id(), started)
    job = GenerationJob(target, [{"role": m.role, "content": m.text()} for m in req.messages], params, req.stream)
    items = gateway.backend.generate(job)
    try:
        # The first item decides the status: a full queue or a failed adapter is an error answer, not a stream.
        first = await anext(items)
    except GenerationError as exc:
        if recorded_failure(exc) and await gateway.capture.record(ex.response("", exc)):
            return generation_error_response(exc, ex.response_id)
        return generation_error_response(exc)
    if req.stream:
        return await _stream(request, gateway, ex, first, items)
    return await _whole(gateway, ex, first, items)


async def _whole(gateway: Gateway, ex: Exchange, first: str | Finish, items: AsyncIterator[str | Finish]) -> web.Response:
    parts: list[str] = []
    item = first
    try:
        while not isinstance(item, Finish):
            parts.append(item)
            item = await anext(items)
    except GenerationError as exc:
        await gateway.capture.record(ex.response("".join(parts), exc))
        return generation_error_response(exc, ex.response_id)
    text = "".join(parts)
    await gateway.capture.record(ex.response(text))
    completion = ChatCompletion(
        id=ex.response_id, model=ex.target.version,
        choices=[Choice(message=AssistantMessage(content=text), finish_reason=item.reason)],
        usage=Usage.of(item.prompt_tokens, item.completion_tokens),
    )
    return web.Response(body=completion.model_dump_json(), content_type="application/json",
                        headers={RESPONSE_ID_HEADER: ex.response_id})


async def _stream(request: web.Request, gateway: Gateway, ex: Exchange, first: str | Finish,
                  items: AsyncIterator[str | Finish]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       RESPONSE_ID_HEADER: ex.response_id})
    await resp.prepare(request)
    created = int(time.time())
    include_usage = bool(ex.request.stream_options and ex.request.stream_options.include_usage)

    def chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None, choices: bool = True) -> bytes:
        body = ChatCompletionChunk(id=ex.response_id, created=created, model=ex.target.version,
                                   choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [], usage=usage)
        return b"data: " + body.model_dump_json().encode() + b"\n\n"

    parts: list[str] = []
    failure: GenerationError | str | None = None
    try:
        await resp.write(chunk(Delta(role="assistant", content="")))
        item = first
        while True:
            if isinstance(item, Finish):
                await resp.write(chunk(Delta(), item.reason))
                if include_usage:
                    await resp.write(chunk(Delta(), usage=Usage.of(item.prompt_tokens, item.completion_tokens), choices=False))
                break
            parts.append(item)
            await resp.write(chunk(Delta(content=item)))
            item = await anext(items)
        await resp.write(b"data: [DONE]\n\n")
    except GenerationError as exc:
        failure = exc
        error = error_body(exc.status, exc.message, exc.param, exc.kind).model_dump_json()
        try:
            await resp.write(b"data: " + error.encode() + b"\n\ndata: [DONE]\n\n")
        except ConnectionError:
            pass
    except ConnectionError:
        failure = "cancelled: the client disconnected before the answer was complete"
        await items.aclose()  # stops the row: no more tokens for a client that left
    await gateway.capture.record(ex.response("".join(parts), failure))
    return resp


async def list_models(request: web.Request) -> web.Response:
    versions = request.app[GATEWAY].versions.servable()
    cards = [ModelCard(id=v.version, created=v.created_at // 1000, status=v.status.value) for v in versions]
    return web.Response(body=ModelList(data=cards).model_dump_json(), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    backend = gateway.backend.status()
    body = {"status": backend["state"], "backend": backend, "routing": gateway.routing.status(),
            "capture": gateway.capture.status()}
    return web.json_response(body, status=503 if backend["state"] == "failed" else 200)


def create_app(gateway: Gateway, auth: AuthSettings | None = None) -> web.Application:
    """The gateway's app; it starts the capture, backend and routing cache on start-up and closes them on cleanup.
    `auth` ([serve_auth]: API keys, rate limit, CORS origins; prefloop/auth/) guards /v1/."""
    app = web.Application(client_max_size=gateway.settings.max_body_bytes, middlewares=[openai_errors])
    app[GATEWAY] = gateway

    async def start(app: web.Application) -> None:
        await gateway.capture.start()
        await gateway.backend.start()
        await gateway.routing.start()

    async def stop(app: web.Application) -> None:
        await gateway.routing.close()
        await gateway.backend.close()
        await gateway.capture.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    protect(app, auth if auth is not None else AuthSettings(), _auth_error)
    return app

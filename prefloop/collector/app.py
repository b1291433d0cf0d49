"""The HTTP collector: the same events as the SDK, for apps not written in Python.

    POST /v1/events   one event object, a JSON array of them, or {"events": [...]}
    GET  /healthz

With API keys configured ([collector_auth], prefloop/auth/), /v1/ needs `Authorization: Bearer
KEY` (401 without, 403 revoked, 429 over the key's rate limit); browsers from the CORS
allow-list may call it.

Every event of a request is validated before any is produced; a request with one bad
event produces nothing and answers 400 with every bad field of every bad event. An
accepted request is answered 202 only after Kafka acknowledged all of its events; if
Kafka does not, 503 (the client may retry: resending the same `event_id`s is safe,
downstream deduplicates on them).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import uvloop
from aiohttp import web

from prefloop import topics
from prefloop.auth import AuthSettings, CollectorAuthSettings, check_bind, protect
from prefloop.errors import ValidationError
from prefloop.sdk.client import FeedbackClient
from prefloop.sdk.events import parse_event
from prefloop.sdk.exceptions import ClientClosedError, DeliveryError, KafkaUnavailableError
from prefloop.settings import Settings, load_settings

log = logging.getLogger("prefloop.collector")

MAX_ERRORS_SHOWN = 100
CLIENT_KEY: web.AppKey[FeedbackClient] = web.AppKey("client", FeedbackClient)
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)


def json_response(body: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error the collector answers is JSON: {"error": "..."} (plus per-event "errors" for 400s)."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request.app[SETTINGS_KEY].collector_max_body_bytes)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own text is "404: Not Found"; a raiser's text (aiohttp-cors' refusal) says more than the reason.
        text = exc.text or ""
        return error_response(exc.status, exc.reason if not text or text.startswith(f"{exc.status}: ") else text)


def _too_large(limit: int) -> web.Response:
    return error_response(413, f"request body is larger than the collector's limit of {limit} bytes; send smaller batches")


def _events_of(body: Any) -> list[Any] | None:
    """The list of events a body carries, or None when its shape is wrong."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        if "events" in body and "type" not in body:
            events = body["events"]
            return events if isinstance(events, list) and len(body) == 1 else None
        return [body]
    return None


def _json_content_type(value: str) -> bool:
    return value in ("application/json", "") or value.endswith("+json")


async def post_events(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    limit = settings.collector_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    # No Content-Type is taken as JSON (curl-style clients); another type is a client's mistake.
    content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if not _json_content_type(content_type):
        return error_response(415, f"Content-Type should be application/json, got {content_type[:100]}")
    raw = await request.read()  # aiohttp enforces client_max_size on chunked bodies too
    try:
        # orjson: a fifth of json's cost, and it refuses what Avro could not carry (invalid
        # UTF-8, lone surrogates) and nesting deeper than 1024 (json raises RecursionError).
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error_response(400, f"request body is not valid JSON: {exc}")
    events = _events_of(body)
    if events is None:
        return error_response(400, 'body should be an event object, a JSON array of events, or {"events": [...]}')
    if not events:
        return error_response(400, "no events in the request")
    if len(events) > settings.collector_max_events:
        return error_response(413, f"{len(events)} events in one request; the collector takes at most "
                                   f"{settings.collector_max_events}: send smaller batches")

    records = []
    errors = []
    for index, event in enumerate(events):
        try:
            records.append(parse_event(event))
        except ValidationError as exc:
            errors.extend({"index": index, "field": e.field or None, "message": e.message} for e in exc.errors)
    if errors:
        bad = len({e["index"] for e in errors})
        shown = errors[:MAX_ERRORS_SHOWN]  # the answer stays small whatever the body held
        more = f" (the first {MAX_ERRORS_SHOWN} of {len(errors)} problems are listed)" if len(errors) > MAX_ERRORS_SHOWN else ""
        return error_response(400, f"{bad} of {len(events)} event(s) are invalid; none was accepted{more}", errors=shown)

    client = request.app[CLIENT_KEY]
    try:
        await client.send_many(records, validated=True)  # parse_event checked every field
    except (DeliveryError, KafkaUnavailableError, ClientClosedError) as exc:
        log.warning("answering 503: %s", exc)
        return error_response(503, f"events not accepted, Kafka is unavailable: {exc}")
    return json_response({"accepted": len(records), "event_ids": [r.event_id for r in records]}, 202)


async def healthz(request: web.Request) -> web.Response:
    client = request.app[CLIENT_KEY]
    if client.closed:
        return error_response(503, "the collector's Kafka producer is closed")
    return json_response({"status": "ok", "kafka": client.bootstrap_servers, "connected": client.started}, 200)


def _auth_error(status: int, message: str, code: str, headers: dict[str, str]) -> web.Response:
    response = error_response(status, message, code=code)
    response.headers.update(headers)
    return response


def create_app(settings: Settings, client: FeedbackClient, auth: AuthSettings | None = None) -> web.Application:
    """The collector's aiohttp application. It starts `client` on start-up; the caller owns closing it.
    `auth` (default: the [collector_auth] settings) gives its API keys, rate limit and CORS origins."""
    auth = auth if auth is not None else settings.section(CollectorAuthSettings)
    app = web.Application(client_max_size=settings.collector_max_body_bytes, middlewares=[json_errors])
    app[SETTINGS_KEY] = settings
    app[CLIENT_KEY] = client

    async def start_client(app: web.Application) -> None:
        await app[CLIENT_KEY].start()

    app.on_startup.append(start_client)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    protect(app, auth, _auth_error)
    return app


def run(settings: Settings | None = None, responses_topic: str = topics.RESPONSES, actions_topic: str = topics.ACTIONS,
        insecure: bool = False) -> None:
    """Serve the collector on settings.collector_host:collector_port until SIGINT/SIGTERM; flushes on exit.
    The topics default to the contract's; `prefloop bench collector` points them at its own. A
    non-loopback address without API keys is refused unless `insecure`."""
    settings = settings if settings is not None else load_settings()
    auth = settings.section(CollectorAuthSettings)
    check_bind(settings.collector_host, auth, "collector", insecure)

    async def build() -> web.Application:
        client = FeedbackClient(settings, responses_topic=responses_topic, actions_topic=actions_topic)
        app = create_app(settings, client, auth)

        async def close_client(_: web.Application) -> None:
            await client.close()

        app.on_cleanup.append(close_client)
        return app

    log.info("collector listening on %s, producing to Kafka at %s; %s", settings.collector_url, settings.bootstrap_servers,
             f"{len(auth.keys)} API key(s)" if auth.keys else "no API keys (loopback only)" if not auth.insecure else "no API keys (insecure)")
    # uvloop: libuv's event loop does aiohttp's and aiokafka's socket work at less cost than asyncio's
    # (about a sixth more requests per second measured under wrk).
    loop = uvloop.new_event_loop()
    web.run_app(build(), host=settings.collector_host, port=settings.collector_port, print=None, access_log=None, loop=loop)

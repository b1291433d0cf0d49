"""`prefloop serve`: argument parsing, the bind rule, and wiring settings into a running gateway."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from prefloop.arguments import one_line_errors
from prefloop.auth import AuthSettings, ServeAuthSettings, check_bind
from prefloop.setting_fields import add_flags, flag_values
from prefloop.serving.settings import ServeSettings
from prefloop.settings import Settings, load_settings

ADDRESS_FLAGS = ("serve_host", "serve_port")  # top-level settings, as --host and --port
FLAGS = ("backend", "base_model", "device", "upstream_url", "batch_window_ms", "max_batch_size", "queue_size", "capture")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = one_line_errors(sub.add_parser(
        "serve", help="OpenAI-compatible gateway: routes users to model versions and records every answer",
        description="Serve /v1/chat/completions and /v1/models. Flags override the [serve] settings.",
    ))
    add_flags(p, Settings, ADDRESS_FLAGS, {"serve_host": ("--host",), "serve_port": ("--port",)})
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without API keys ([serve_auth])")
    add_flags(p, ServeSettings, FLAGS)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(**flag_values(args, ADDRESS_FLAGS))
    serve = dataclasses.replace(settings.section(ServeSettings), **flag_values(args, FLAGS))
    auth = settings.section(ServeAuthSettings)
    check_bind(settings.serve_host, auth, "serve", args.insecure)
    run(settings, serve, auth)
    return 0


def build_gateway(settings: Settings, serve: ServeSettings):  # -> server.Gateway
    """The gateway's parts from settings. Registers the base model as v1.0 if the registry is empty,
    so a fresh install serves the base model as production."""
    from prefloop.sdk.client import FeedbackClient
    from prefloop.serving.capture import ResponseCapture
    from prefloop.serving.routing_cache import RoutingCache
    from prefloop.serving.server import Gateway
    from prefloop.serving.versions import RegistryView
    from trainer.mirror import open_registry
    from trainer.settings import TrainerSettings

    trainer = settings.section(TrainerSettings)
    base_spec = serve.base_model or trainer.base_model
    registry = open_registry(settings)
    try:
        registry.ensure_base(base_spec)
    finally:
        registry.mirror.close()
    if serve.backend == "local":
        from prefloop.serving.backends.local import LocalBackend

        backend = LocalBackend(serve, base_spec, settings.cache_dir, chat_template=trainer.chat_template)
    else:
        from prefloop.serving.backends.upstream import UpstreamBackend

        backend = UpstreamBackend(serve)
    versions = RegistryView(settings.home)
    routing = RoutingCache(settings.redis_dsn, serve.routing_refresh_s, serve.redis_timeout_s, versions.production)
    capture = ResponseCapture(FeedbackClient(settings, client_id="prefloop-gateway") if serve.capture else None)
    return Gateway(serve, backend, routing, versions, capture)


def run(settings: Settings, serve: ServeSettings, auth: AuthSettings | None = None) -> None:
    """Serve until SIGINT/SIGTERM; buffered Responses are flushed on the way out."""
    from aiohttp import web

    from prefloop.services.process import ensure_port_free
    from prefloop.serving.server import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_port_free(settings.serve_port, "gateway", "serve_port")
    auth = auth if auth is not None else settings.section(ServeAuthSettings)
    app = create_app(build_gateway(settings, serve), auth)
    logging.getLogger("prefloop.serve").info(
        "gateway on %s (backend %s, capture %s)", settings.serve_url, serve.backend, "on" if serve.capture else "off")
    web.run_app(app, host=settings.serve_host, port=settings.serve_port, print=None, access_log=None)

"""Runs the web app: wires the arena to Redis, the gateway and the SDK, then serves the Gradio app
until the process is stopped. Off loopback it serves only behind a login (`check_bind`)."""

from __future__ import annotations

import logging
import sys

from prefloop.settings import Settings
from prefloop.web.settings import WebSettings, check_bind, load_web_settings

READY_LINE = "prefloop web: serving"


def gateway_url(settings: Settings, web: WebSettings) -> str:
    return web.gateway_url or f"{settings.serve_url}/v1"


def run(settings: Settings, web: WebSettings | None = None) -> None:
    web = web or load_web_settings(settings)
    check_bind(settings.web_host, web)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    # Imported here: Gradio takes seconds to import, and `prefloop report` does not need it.
    from prefloop.sdk import SyncFeedbackClient
    from prefloop.web.app import CSS, WebContext, build_app, theme
    from prefloop.web.arena import Arena, BattleStore
    from prefloop.web.generation import GatewayGenerator
    from prefloop.web.sources import LoopSources

    sources = LoopSources(settings)
    redis_client = sources.redis()
    generator = GatewayGenerator(gateway_url(settings, web), web.gateway_api_key, web.max_tokens, web.temperature,
                                 web.generation_timeout_s)
    sink = SyncFeedbackClient(settings, client_id="prefloop-web")
    arena = Arena(BattleStore(redis_client, web.battle_ttl_s), generator, sink, sources.versions, sources.routing)
    demo = build_app(WebContext(settings, web, arena)).queue(default_concurrency_limit=web.concurrency)
    auth = (web.username, web.password) if web.username else None
    try:
        demo.launch(server_name=settings.web_host, server_port=settings.web_port, auth=auth, prevent_thread_lock=True,
                    quiet=True, show_error=False, footer_links=[], enable_monitoring=False, mcp_server=False,
                    ssr_mode=False, run_history=False, css=CSS, theme=theme())
        print(f"{READY_LINE} on {settings.web_url} (arena answers from {generator.base_url})", flush=True)
        demo.block_thread()
    finally:
        demo.close()
        arena.close()
        sink.close()
        generator.close()
        redis_client.close()


__all__ = ["run", "gateway_url", "READY_LINE"]

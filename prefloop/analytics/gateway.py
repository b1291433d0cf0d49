"""The analytics service: the one process that owns the embedded chDB store.

chDB allows a single owning process per data directory, yet the streams workers,
the trainer and `prefloop sql` all need the store while services run. This
service opens chDB once, applies migrations, and serves two loopback endpoints
that mirror clickhouse-connect's raw calls (`/raw` and `/insert`); `GatewayStore`
is their client. chDB calls are blocking and not re-entrant, so they run one at a
time on a dedicated thread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from prefloop.analytics.migrations import migrate
from prefloop.analytics.store import AnalyticsError, ClickHouseStore, open_embedded
from prefloop.settings import load_settings

log = logging.getLogger("prefloop.analytics")

MAX_BODY = 256 * 1024 * 1024


def create_app(store: ClickHouseStore) -> web.Application:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def raw(request: web.Request) -> web.Response:
        sql = (await request.read()).decode()
        fmt = request.query.get("format", "JSONCompact")
        try:
            body = await run(store.raw, sql, fmt)
        except AnalyticsError as exc:
            return web.Response(status=400, text=str(exc))
        return web.Response(body=body, content_type="application/octet-stream")

    async def insert(request: web.Request) -> web.Response:
        table = request.query.get("table", "")
        columns = [c for c in request.query.get("columns", "").split(",") if c]
        if not table or not columns:
            return web.Response(status=400, text="insert needs ?table=NAME&columns=a,b,c")
        fmt = request.query.get("format", "JSONEachRow")
        body = await request.read()
        try:
            await run(store.insert_json, table, columns, body, fmt)
        except AnalyticsError as exc:
            return web.Response(status=400, text=str(exc))
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/ping", ping)
    app.router.add_post("/raw", raw)
    app.router.add_post("/insert", insert)
    app.on_cleanup.append(lambda _: asyncio.get_running_loop().run_in_executor(None, executor.shutdown))
    return app


async def serve(port: int) -> None:
    settings = load_settings()
    store = open_embedded(settings)
    applied = migrate(store)
    log.info("chDB store at %s; %d migration(s) applied", settings.chdb_path, len(applied))
    runner = web.AppRunner(create_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info("analytics service listening on 127.0.0.1:%d", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Own the embedded chDB store and serve it on loopback.")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.port or load_settings().analytics_port))


if __name__ == "__main__":
    main()

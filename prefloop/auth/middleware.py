"""`protect(app, auth, paths)`: API keys, rate limit and CORS on an aiohttp application.

Requests to a protected path (`/v1/` for both services) need `Authorization: Bearer KEY`
when keys are configured: 401 without a key or with an unknown one, 403 with a revoked one,
429 with `Retry-After` over the key's rate. CORS (aiohttp-cors) answers browsers' preflight
requests for allowed origins and adds the headers to every answer of a protected route,
errors included, so a browser app can read why it was refused.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import aiohttp_cors
from aiohttp import web

from prefloop.auth.keys import KeyRing
from prefloop.auth.ratelimit import RateLimiter
from prefloop.auth.settings import AuthSettings

# error(status, message, code, headers) -> the service's own error body (JSON for the collector, OpenAI's for the gateway)
ErrorFactory = Callable[[int, str, str, dict[str, str]], web.Response]


def protect(app: web.Application, auth: AuthSettings, error: ErrorFactory, prefix: str = "/v1/") -> None:
    """Add the checks to `app` (call after its routes are added)."""
    ring = KeyRing(auth)
    limiter = RateLimiter(auth.rate_limit_per_s, auth.rate_limit_burst)

    @web.middleware
    async def check_access(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        if request.method == "OPTIONS" or not request.path.startswith(prefix):
            return await handler(request)  # preflight (aiohttp-cors answers it) and health checks
        caller = request.remote or "unknown"
        if ring.enabled:
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return error(401, "missing API key: send `Authorization: Bearer KEY`", "missing_api_key", {})
            found = ring.lookup(key.strip())
            if found is None:
                return error(401, "invalid API key", "invalid_api_key", {})
            if found.revoked:
                return error(403, f"API key {found.name!r} was revoked; ask for a new key", "revoked_api_key", {})
            caller = found.name
        wait = limiter.retry_after(caller)
        if wait is not None:
            return error(429, f"rate limit of {auth.rate_limit_per_s:g} requests/s exceeded; retry in {wait}s",
                         "rate_limited", {"Retry-After": str(wait)})
        return await handler(request)

    app.middlewares.insert(0, check_access)
    if auth.cors_origins:
        options = aiohttp_cors.ResourceOptions(allow_credentials=False, expose_headers=("Retry-After",),
                                               allow_headers=("Authorization", "Content-Type"), max_age=600)
        cors = aiohttp_cors.setup(app, defaults={origin: options for origin in auth.cors_origins})
        for route in list(app.router.routes()):
            if route.resource is not None and route.resource.canonical.startswith(prefix):
                cors.add(route)

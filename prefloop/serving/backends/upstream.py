"""The `openai` backend: forward each request to an OpenAI-compatible upstream (in production vLLM).

The gateway still routes (the upstream is asked for the chosen version's upstream model name),
measures and records; the upstream only generates. vLLM serves the base model and every adapter
as LoRA modules under their version names:

    vllm serve /models/smollm2 --served-model-name v1.0 --enable-lora --max-loras 8 --max-lora-rank 16 \\
        --lora-modules v1.1=/prefloop/home/runs/…/adapter v1.2=/prefloop/home/runs/…/adapter

and takes a newly trained adapter without a restart (server started with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):

    curl -X POST http://127.0.0.1:8000/v1/load_lora_adapter -H 'Content-Type: application/json' \\
        -d '{"lora_name": "v1.3", "lora_path": "/prefloop/home/runs/…/adapter"}'

(docs/serving.md has the whole recipe). Upstream 4xx answers are passed on with their status;
an unreachable or failing upstream is a 502, a slow one a 504.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from prefloop.errors import one_line
from prefloop.serving.generation import Finish, GenerationError, GenerationJob
from prefloop.serving.settings import ServeSettings

PASSED_ON = (400, 404, 413, 422, 429)  # upstream statuses that are the request's fault or a rate limit


def without_credentials(url: str) -> str:
    """`url` with any user:password@ removed, for logs and /health."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class UpstreamBackend:
    name = "openai"

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.url = settings.upstream_url + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.failures = 0

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.settings.upstream_api_key}"} if self.settings.upstream_api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    def status(self) -> dict[str, object]:
        return {"backend": self.name, "state": "ready" if self.ready else "stopped",
                "upstream": without_credentials(self.settings.upstream_url), "requests": self.requests, "failures": self.failures}

    def _body(self, job: GenerationJob) -> dict[str, Any]:
        p = job.params
        body: dict[str, Any] = {
            "model": self.settings.upstream_model(job.target.version), "messages": job.messages,
            "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "stream": job.stream,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.ignore_eos:
            body["ignore_eos"] = True
        if job.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def generate(self, job: GenerationJob) -> AsyncIterator[str | Finish]:
        assert self._session is not None, "start() first"
        self.requests += 1
        try:
            async with self._session.post(self.url, json=self._body(job)) as resp:
                if resp.status != 200:
                    raise await self._http_error(resp)
                if job.stream:
                    async for item in self._events(resp):
                        yield item
                else:
                    for item in self._whole(await resp.json()):
                        yield item
        except GenerationError:
            self.failures += 1
            raise
        except (asyncio.TimeoutError, TimeoutError):
            self.failures += 1
            raise GenerationError("timeout", f"the upstream gave no complete answer within {self.settings.request_timeout_s:g}s",
                                  status=504) from None
        except (aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError) as exc:
            self.failures += 1
            raise GenerationError("upstream", f"upstream {without_credentials(self.settings.upstream_url)} failed: "
                                  f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", status=502) from None

    @staticmethod
    def _whole(data: dict[str, Any]) -> list[str | Finish]:
        """The text and Finish of a non-streamed upstream answer."""
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        text = (choice.get("message") or {}).get("content") or ""
        finish = Finish(choice.get("finish_reason") or "stop", int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
        return [text, finish] if text else [finish]

    async def _http_error(self, resp: aiohttp.ClientResponse) -> GenerationError:
        text = await resp.text()
        try:
            info = json.loads(text)["error"]
            message, param = str(info.get("message", "")), info.get("param")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, param = one_line(text), None
        status = resp.status if resp.status in PASSED_ON else 502
        retry = resp.headers.get("Retry-After")
        return GenerationError("upstream", f"upstream answered {resp.status}: {message}", status=status, param=param,
                               retry_after_s=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[str | Finish]:
        """Text deltas of an upstream SSE stream, then one Finish (usage from its last chunk)."""
        reason, usage = "stop", {}
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise GenerationError("upstream", f"upstream stream failed: {chunk['error'].get('message', chunk['error'])}", status=502)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
                reason = choice.get("finish_reason") or reason
        yield Finish(reason, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

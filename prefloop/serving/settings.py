"""`ServeSettings`: the `[serve]` section (`PREFLOOP_SERVE_<FIELD>`); the address is the top-level
`serve_host` / `serve_port`. `prefloop serve` flags override both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting

BACKENDS = ("local", "openai")


@dataclass
class ServeSettings:
    SECTION: ClassVar[str] = "serve"

    backend: str = setting(
        "local", choices=BACKENDS,
        help="`local`: transformers + PEFT in this process (adapters per version, dynamic batching). "
             "`openai`: forward to an OpenAI-compatible upstream such as vLLM serving the adapters as LoRA modules.",
    )
    base_model: str = setting(
        "", help="Base model of the local backend: `tiny`, `smollm2` or a checkpoint directory. Empty means the "
                 "trainer's `base_model`, so the gateway serves the model the adapters were trained on.",
    )
    device: str = setting("auto", choices=("auto", "cpu", "cuda"),
                          help="Local backend device; `auto` is CUDA when available. CUDA runs bf16 (when supported), CPU fp32.")
    batch_window_ms: float = setting(
        5.0, ge=0, le=1000,
        help="How long the local backend waits, after the first request of a batch arrives, for more requests "
             "to the same version. A few milliseconds let concurrent requests share one forward pass.",
    )
    max_batch_size: int = setting(16, ge=1, le=512, help="Most requests generated together in one batch.")
    queue_size: int = setting(
        256, ge=1,
        help="Most requests waiting for a batch; one more is answered 429 with Retry-After instead of queueing without bound.",
    )
    max_tokens: int = setting(1024, ge=1, help="Largest `max_tokens` / `max_completion_tokens` a request may ask for (400 above).")
    default_max_tokens: int = setting(256, ge=1, help="Tokens generated when a request sets no `max_tokens`.")
    max_prompt_tokens: int = setting(4096, ge=1, help="Longest prompt (the rendered conversation, in tokens) the local backend accepts (400 above).")
    max_body_bytes: int = setting(1_048_576, ge=1024, help="Largest request body; a larger one is answered 413.")
    request_timeout_s: float = setting(
        120.0, gt=0,
        help="Longest a request may wait and generate; past it the answer is an error (504) and its Response records `timeout`.",
    )
    max_adapters: int = setting(8, ge=1, help="Adapters the local backend keeps loaded; the least recently used is unloaded beyond it.")
    cpu_threads: int = setting(0, ge=0, help="torch intra-op threads on CPU; 0 keeps torch's default (one per core).")
    capture: bool = setting(
        True, help="Record every answer as a Response on feedback.responses. Off only for a gateway that is another "
                   "gateway's upstream (that one records) or for benchmarks.",
    )
    routing_refresh_s: float = setting(1.0, gt=0, help="How often the routing table is re-read from Redis.")
    redis_timeout_s: float = setting(0.5, gt=0, help="Timeout of one routing-table read; with Redis down the last table stays in force.")
    upstream_url: str = setting("", help="Base URL of the OpenAI-compatible upstream of the `openai` backend, e.g. http://127.0.0.1:8000/v1.")
    upstream_api_key: str = setting("", secret=True, help="Bearer token sent to the upstream; never logged.")
    upstream_models: dict[str, str] = setting(
        factory=dict,
        help="Upstream model name per registry version (`v1.0=base,v1.2=v1.2`); a version not listed is asked for "
             "by its own name, which is what `vllm serve --served-model-name v1.0 --lora-modules v1.2=DIR` serves.",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f'"default_max_tokens" should be at most max_tokens ({self.max_tokens}), got {self.default_max_tokens}')
        if self.backend == "openai" and not self.upstream_url:
            raise ConfigError('"upstream_url" is required with backend openai (e.g. http://127.0.0.1:8000/v1)')
        self.upstream_url = self.upstream_url.rstrip("/")

    def upstream_model(self, version: str) -> str:
        return self.upstream_models.get(version, version)

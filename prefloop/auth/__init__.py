"""API keys, per-key rate limits and a CORS allow-list for prefloop's HTTP services (the
collector and the gateway): one implementation, configured per service in its own section
(`[collector_auth]`, `[serve_auth]`)."""

from prefloop.auth.keys import ApiKey, KeyRing, generate_key, hash_key
from prefloop.auth.middleware import protect
from prefloop.auth.settings import AuthSettings, CollectorAuthSettings, ServeAuthSettings, check_bind, is_loopback

__all__ = ["ApiKey", "AuthSettings", "CollectorAuthSettings", "ServeAuthSettings", "KeyRing", "check_bind", "generate_key", "hash_key", "is_loopback", "protect"]

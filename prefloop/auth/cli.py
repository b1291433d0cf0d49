"""`prefloop keys create | revoke | list`: API keys of the collector and the gateway."""

from __future__ import annotations

import argparse
import re
import sys

from prefloop.auth.config_file import add_key_entry, config_path, revoke_key_entry
from prefloop.auth.keys import KeyRing, generate_key, hash_key
from prefloop.auth.settings import AUTH_SETTINGS
from prefloop.settings import load_settings


def _name(text: str) -> str:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", text):
        raise argparse.ArgumentTypeError(f"should be letters, digits, '.', '_' or '-' (at most 64), got {text!r}")
    return text


def add_commands(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys of the collector and the gateway (stored hashed in the settings file)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    keys_sub.required = True
    for action, help_text, handler in (
        ("create", "make a key, store its SHA-256 in the settings file and print the key (once)", cmd_create),
        ("revoke", "answer 403 to a key from now on (services read it when they start)", cmd_revoke),
        ("list", "the keys' names and whether they are revoked", cmd_list),
    ):
        p = keys_sub.add_parser(action, help=help_text)
        if action != "list":
            p.add_argument("name", type=_name, metavar="NAME")
        p.add_argument("--service", choices=sorted(AUTH_SETTINGS), default="collector", help="whose key (default: collector)")
        p.set_defaults(handler=handler)


def cmd_create(args: argparse.Namespace) -> int:
    key = generate_key()
    path = add_key_entry(AUTH_SETTINGS[args.service].SECTION, args.name, hash_key(key))
    print(key)
    print(f"stored {args.name}'s SHA-256 in [{AUTH_SETTINGS[args.service].SECTION}] of {path}; this is the only time the key is "
          "shown. Restart the service to use it.", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    path = revoke_key_entry(AUTH_SETTINGS[args.service].SECTION, args.name)
    print(f"revoked {args.name} in [{AUTH_SETTINGS[args.service].SECTION}] of {path}; restart the service to apply it")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    auth = load_settings().section(AUTH_SETTINGS[args.service])
    ring = KeyRing(auth)
    if not ring.enabled:
        print(f"no API keys for the {args.service} ({config_path()}): it asks for none and binds only loopback")
        return 0
    for key in ring.names():
        print(f"{key.name:<24} {'revoked' if key.revoked else 'active'}")
    return 0


__all__ = ["add_commands"]

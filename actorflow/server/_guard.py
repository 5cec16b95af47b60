"""What every request must pass before it is routed: a body framed one way only, a
``Host`` this server answers to, and no ``Origin`` (browser page) the operator did not name.

Without a token, a page on any website can POST to ``http://127.0.0.1:8787`` from its
visitor's browser, and through DNS rebinding (its own name resolving to 127.0.0.1) read the
answers too. The browser marks both: the page's ``Origin``, and its own name as ``Host``.
So a request with a ``Host`` outside the allow-list is refused (421), as Django's
ALLOWED_HOSTS and Jupyter do, and one with an ``Origin`` nobody allowed (403); the
content-type rule (415, in the endpoints) stops the forms a page may post without asking.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from actorflow.server._responses import ApiError, ambiguous_framing, error_response

#: Names a request from this machine may use: always allowed, with the port served.
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: Paths a prober reaches by the pod's IP address: no Host check (they change nothing and
#: reveal only liveness and readiness).
HEALTH_PATHS = frozenset({"/livez", "/readyz"})


@dataclasses.dataclass(frozen=True)
class HostRule:
    """One allowed ``Host``: a name, on one port or (``port`` None) on any; ``*`` is any."""

    name: str
    port: str | None

    @classmethod
    def parse(cls, text: str) -> HostRule:
        """``NAME``, ``NAME:PORT``, ``[IPv6]``, ``[IPv6]:PORT`` or ``*`` (ValueError if
        it is none of them, e.g. a URL)."""
        if text == "*":
            return cls("*", None)
        name, port = split_host(text.strip())
        if not name or "/" in name or (port is not None and not _is_port(port)):
            raise ValueError(
                f"--allowed-host takes a host name or address, optionally with a port "
                f"(api.example.com, api.example.com:8787, 10.0.0.7, [fd00::7]) or *, "
                f"not {text!r}"
            )
        return cls(name, port)

    def allows(self, name: str, port: str | None) -> bool:
        """Whether a request whose Host is ``name[:port]`` matches this rule."""
        if self.name == "*":
            return True
        return name == self.name and (self.port is None or port == self.port)


def split_host(value: str) -> tuple[str, str | None]:
    """A Host header (or rule) as (lower-case name, port or None); ``[::1]:80`` keeps the
    brackets. A malformed one gives a name no rule matches."""
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[: end + 1], value[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return "", None
        return name.lower(), rest[1:] or None
    name, colon, port = value.partition(":")
    return name.lower(), port if colon else None


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def served_hosts(bound: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """The Host values a server listening on ``bound:port`` answers by default (this
    machine's names and the bound address, with the port), then ``extra``."""
    try:
        address = ipaddress.ip_address(bound)
    except ValueError:
        shown = bound
    else:
        shown = f"[{address}]" if address.version == 6 else str(address)
    names = dict.fromkeys((*LOCAL_NAMES, shown.lower()))
    return [f"{name}:{port}" for name in names] + list(extra)


def parse_origin(text: str) -> str:
    """An allowed origin as browsers send it (``scheme://host[:port]``, lower case, no
    path); ValueError if ``text`` is not one."""
    origin = text.strip().rstrip("/").lower()
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest or "@" in rest:
        raise ValueError(
            f"--allowed-origin takes an origin: a scheme and host with an optional port, "
            f"as browsers send it (https://console.example.com, http://localhost:3000), "
            f"not {text!r}"
        )
    return origin


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` is a page served by this server under the ``host`` the request
    names (``http://HOST`` or ``https://HOST``, as browsers send a page's own origin).

    Only once the ``Host`` is one the allow-list names does this mean anything: a page on
    another site has another origin, and one whose name was rebound to this server has a
    ``Host`` the list refuses."""
    scheme, sep, authority = origin.lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and authority == host.lower()


class RequestGuard:
    """ASGI middleware refusing, before routing: a body framed by both Content-Length and
    Transfer-Encoding (400), several or no Host headers (400), a Host outside ``hosts``
    (421, health checks exempt), an Origin outside ``origins`` (403) unless it is this
    server's own page at the ``Host`` it asked for (`same_origin`)."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str], origins: Sequence[str]) -> None:
        self.app = app
        self.hosts = [HostRule.parse(host) for host in hosts]
        self.origins = frozenset(parse_origin(origin) for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self._check(scope)
            except ApiError as refusal:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        if "content-length" in headers and "transfer-encoding" in headers:
            raise ambiguous_framing()
        path = scope["path"]
        if path not in HEALTH_PATHS:
            self._check_host(headers.getlist("host"), path)
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            if path not in HEALTH_PATHS and self._own_page(origin, headers["host"]):
                return  # the server's own page (the console at /ui)
            raise ApiError(
                403,
                "origin_not_allowed",
                f"requests from web pages are refused, and this one comes from a page of "
                f"{origin!r}: a page on any website could otherwise drive this server "
                f"from its visitors' browsers. To let a console on that site use the API, "
                f"start the server with --allowed-origin {origin}",
            )

    def _own_page(self, origin: str, host: str) -> bool:
        """Whether ``origin`` is this server's own page at ``host``, a name the allow-list
        names (``*`` does not: it lets any page that rebinds its name to this server in)."""
        name, port = split_host(host)
        named = any(rule.name != "*" and rule.allows(name, port) for rule in self.hosts)
        return named and same_origin(origin, host)

    def _check_host(self, hosts: list[str], path: str) -> None:
        if len(hosts) != 1:
            raise ApiError(
                400,
                "invalid_host",
                f"the request to {path} has {len(hosts)} Host headers; send exactly one, "
                f"naming this server",
            )
        name, port = split_host(hosts[0])
        if not any(rule.allows(name, port) for rule in self.hosts):
            allowed = ", ".join(
                rule.name + (f":{rule.port}" if rule.port else "") for rule in self.hosts
            )
            raise ApiError(
                421,
                "host_not_allowed",
                f"this server does not answer to the Host {hosts[0]!r} (the request was "
                f"to {path}); it answers to: {allowed}. If clients reach it by that name, "
                f"start it with --allowed-host {name}; a web page whose own name resolves "
                f"to this server is refused this way (DNS rebinding)",
            )

"""The monitoring HTTP app: Go's routes under ``http_base_path``, plus /metrics and /dashboard.

Theory of operation
-------------------
The Go server registers each endpoint on a ``net/http.ServeMux`` at
``path.Join(base, "/varz")`` and so on, with the index at ``path.Join(base, "/")``. This
app reproduces that mux rather than starlette's routing, whose defaults differ where a
client can tell: the mux serves every method, answers a non-canonical path (``//varz``)
with a 301 to the clean one, never redirects ``/varz/`` to ``/varz`` (it is a 404) and
takes the first of repeated query parameters. One catch-all route hands each request to
``dispatch``, which looks the path up in a table built once from the base path.

The JSON work is in ``natsx.admin.endpoints``; this module only maps paths to it and turns
its results and ``BadRequest`` into responses.
"""
from __future__ import annotations

import html
import posixpath

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from natsx import SERVER_VERSION, __version__
from natsx.admin import dashboard, metrics
from natsx.admin.endpoints import Monitor
from natsx.admin.gohttp import BadRequest, json_response, not_found, text_response

_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

# The index page's links, in the order of Go's HandleRoot, then natsx's own pages.
_INDEX_LINKS = (
    ("General", "/varz"), ("JetStream", "/jsz"), ("Connections", "/connz"),
    ("Accounts", "/accountz"), ("Account Stats", "/accstatz"),
    ("Subscriptions", "/subsz"), ("Routes", "/routez"), ("LeafNodes", "/leafz"),
    ("Gateways", "/gatewayz"), ("Health Probe", "/healthz"),
    ("Dashboard", "/dashboard"), ("Metrics", "/metrics"),
)


def normalize_base_path(p: str) -> str:
    """Go's normalizeBasePath: a leading slash, then path.Clean."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    return _clean(p)


def _clean(p: str) -> str:
    # Go's path.Clean: posixpath.normpath, except that it keeps a leading "//".
    cleaned = posixpath.normpath(p) if p else "."
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _join(base: str, p: str) -> str:
    return _clean(base.rstrip("/") + "/" + p.lstrip("/"))


def _mux_clean(p: str) -> str:
    """net/http cleanPath: path.Clean that keeps a trailing slash."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    cleaned = _clean(p)
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


class _FirstValues:
    """Query parameters as Go's ``r.URL.Query().Get`` sees them: the first value wins."""

    def __init__(self, request: Request) -> None:
        self._values: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            self._values.setdefault(key, value)

    def get(self, name: str, default=None):
        return self._values.get(name, default)


def index_page(base: str) -> str:
    links = "\n".join(
        f'  <a href=".{html.escape(_join(base, p))}">{html.escape(name)}'
        f'<span class="endpoint"> {p}</span></a>' for name, p in _INDEX_LINKS)
    return f"""<html lang="en">
<head>
<title>natsx</title>
<style type="text/css">
  body {{ font-family: ui-sans-serif,system-ui,sans-serif; font-size: 18px; margin-left: 32px }}
  a {{ display:block; margin-left: 7px; padding-bottom: 6px; color: rgb(72 72 92);
       text-decoration: none }}
  a:hover {{ font-weight: 600; color: rgb(59 50 202) }}
  .version {{ font-size: 14px; color: rgb(72 72 92) }}
  .endpoint {{ font-size: 12px; color: #999; font-family: monospace; display: none }}
  a:hover .endpoint {{ display: inline }}
</style>
</head>
<body>
<h1>natsx</h1>
<div class="version">v{SERVER_VERSION} (natsx {__version__})</div>
<br/>
{links}
</body>
</html>"""


def create_app(monitor: Monitor) -> Starlette:
    base = normalize_base_path(monitor.options.http_base_path)

    async def index(request: Request, q) -> Response:
        monitor.count("/")
        return HTMLResponse(index_page(base))

    def json_endpoint(fn, *, indent: bool = True):
        async def handler(request: Request, q) -> Response:
            return json_response(await fn(q), indent=indent)
        return handler

    async def healthz(request: Request, q) -> Response:
        code, body = await monitor.healthz(q)
        # Go: json.Marshal here, not MarshalIndent.
        return json_response(body, code, indent=False)

    async def stacksz(request: Request, q) -> Response:
        # Go sends the stack text with the JSON content type of every monitor answer.
        return Response((await monitor.stacksz()).encode(),
                        headers={"Content-Type": "application/json",
                                 "Access-Control-Allow-Origin": "*"})

    async def raftz(request: Request, q) -> Response:
        # HandleRaftz when the server runs no raft group.
        return text_response("No Raft nodes registered", 404)

    async def metrics_page(request: Request, q) -> Response:
        monitor.count("/metrics")
        varz = await monitor.varz_data()
        return Response(metrics.render(varz, monitor.start_time).encode(),
                        headers={"Content-Type": metrics.CONTENT_TYPE})

    async def dashboard_page(request: Request, q) -> Response:
        monitor.count("/dashboard")
        return HTMLResponse(dashboard.PAGE)

    table = {
        _join(base, "/"): index,
        _join(base, "/varz"): json_endpoint(monitor.varz),
        _join(base, "/connz"): json_endpoint(monitor.connz),
        _join(base, "/routez"): json_endpoint(monitor.routez),
        _join(base, "/gatewayz"): json_endpoint(monitor.gatewayz),
        _join(base, "/leafz"): json_endpoint(monitor.leafz),
        _join(base, "/subsz"): json_endpoint(monitor.subsz),
        _join(base, "/subscriptionsz"): json_endpoint(monitor.subsz),
        _join(base, "/stacksz"): stacksz,
        _join(base, "/accountz"): json_endpoint(monitor.accountz),
        _join(base, "/accstatz"): json_endpoint(monitor.accstatz),
        _join(base, "/jsz"): json_endpoint(monitor.jsz),
        _join(base, "/healthz"): healthz,
        _join(base, "/raftz"): raftz,
        _join(base, "/metrics"): metrics_page,
        _join(base, "/dashboard"): dashboard_page,
    }

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        clean = _mux_clean(path)
        if clean != path:
            query = request.url.query
            location = clean + ("?" + query if query else "")
            return Response(f'<a href="{html.escape(location)}">Moved Permanently</a>.\n\n',
                            status_code=301, headers={"Location": location,
                                                      "Content-Type": "text/html; charset=utf-8"})
        handler = table.get(path)
        if handler is None:
            return not_found()
        try:
            return await handler(request, _FirstValues(request))
        except BadRequest as exc:
            return text_response(str(exc), 400)

    return Starlette(routes=[Route("/{path:path}", dispatch, methods=_METHODS)])

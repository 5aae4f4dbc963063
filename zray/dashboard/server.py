"""The dashboard's HTTP server (aiohttp): pages, the JSON API, and who may read them.

One asyncio loop serves HTTP; the reads of the head run in a small thread
pool (the state API is blocking); a background task samples usage every
``Sampler.interval_s``.  Pages are one static shell (``static/index.html``)
whose script draws the page its path names; no page can write anything.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from aiohttp import web

from zray.dashboard import auth
from zray.dashboard.api import Api
from zray.dashboard.reader import Sampler, StateReader

log = logging.getLogger("zray.dashboard")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGES = ("/", "/tasks", "/actors", "/timeline", "/logs", "/cluster-metrics")
PUBLIC = ("/login", "/static/app.css", "/static/favicon.svg")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _login_page(failed: bool, target: str) -> str:
    note = '<p class="login-error">That token is not this cluster\'s.</p>' if failed else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>zray dashboard: sign in</title><link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/favicon.svg"></head>
<body class="login"><form class="login-box" method="post" action="/login">
<h1><span class="logo">z</span>ray dashboard</h1>
<p>This dashboard listens beyond this host, so it asks for the cluster's dashboard
token. <code>zray start --head</code> printed it; anyone with the cluster key can
print it again with <code>zray dashboard-token</code>.</p>{note}
<input type="password" name="token" placeholder="dashboard token" autofocus required>
<input type="hidden" name="next" value="{html.escape(target)}">
<button type="submit">Sign in</button></form></body></html>"""


def _safe_target(target: str | None) -> str:
    """A local path to go back to after signing in (never another site)."""
    parts = urlsplit(target or "/")
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or \
            parts.path[1:2] in ("/", "\\"):         # "//host" and "/\host" leave the site
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def make_guard(host: str, token: str):
    """The middleware that admits requests (see ``zray.dashboard.auth``)."""
    loopback = auth.is_loopback(host)

    @web.middleware
    async def guard(request, handler):
        if loopback:
            if not auth.host_header_is_local(request.headers.get("Host")):
                raise web.HTTPForbidden(text="this dashboard answers only to localhost "
                                             "names (it listens on loopback)")
        elif request.path not in PUBLIC:
            presented = auth.bearer(request.headers.get("Authorization")) or \
                request.cookies.get(auth.COOKIE)
            if not auth.token_matches(presented, token):
                if request.path.startswith("/api/") or request.path == "/metrics" or \
                        request.method != "GET":
                    raise web.HTTPUnauthorized(
                        text='{"error": "this dashboard needs its token: '
                             'Authorization: Bearer TOKEN"}',
                        content_type="application/json",
                        headers={"WWW-Authenticate": 'Bearer realm="zray dashboard"'})
                return web.Response(text=_login_page(False, request.path_qs), status=401,
                                    content_type="text/html")
        return await handler(request)
    return guard


async def _secure_headers(request, response):
    """Every response, errors included, forbids framing, sniffing and foreign scripts."""
    response.headers.update(SECURITY_HEADERS)


def make_login(host: str, token: str):
    async def login(request):
        if request.method == "GET":
            return web.Response(text=_login_page(False, request.query.get("next", "/")),
                                content_type="text/html")
        form = await request.post()
        target = _safe_target(form.get("next"))
        if auth.is_loopback(host):
            raise web.HTTPSeeOther(target)          # nothing to sign in to
        if auth.token_matches(form.get("token"), token):
            response = web.HTTPSeeOther(target)
            response.set_cookie(auth.COOKIE, form.get("token") or "", httponly=True,
                                samesite="Strict", path="/")
            raise response
        return web.Response(text=_login_page(True, target), status=401,
                            content_type="text/html")
    return login


async def _shell(request):
    return web.FileResponse(os.path.join(STATIC, "index.html"),
                            headers={"Content-Type": "text/html; charset=utf-8"})


def make_app(endpoint: str, config, host: str, token: str) -> web.Application:
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="zray-dashboard")
    reader = StateReader(endpoint, config)
    sampler = Sampler(reader)
    app = web.Application(middlewares=[make_guard(host, token)],
                          client_max_size=64 * 1024)
    app["executor"], app["sampler"] = executor, sampler
    api = Api(reader, sampler, executor)
    login = make_login(host, token)
    app.add_routes(api.routes())
    app.add_routes([web.get("/login", login), web.post("/login", login)])
    app.add_routes([web.get(path, _shell) for path in PAGES])
    app.router.add_static("/static", STATIC, append_version=False)
    app.on_response_prepare.append(_secure_headers)
    app.on_startup.append(_start_sampling)
    app.on_cleanup.append(_stop_sampling)
    return app


async def _sample_forever(sampler, executor):
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(executor, sampler.sample)
        except (ConnectionError, RuntimeError, OSError) as exc:
            log.debug("could not sample the cluster's usage: %s", exc)
        except Exception:
            log.exception("sampling the cluster's usage failed")
        await asyncio.sleep(sampler.interval_s)


async def _start_sampling(app):
    app["sampling"] = asyncio.get_running_loop().create_task(
        _sample_forever(app["sampler"], app["executor"]))


async def _stop_sampling(app):
    app["sampling"].cancel()
    app["executor"].shutdown(wait=False, cancel_futures=True)


__all__ = ["make_app", "make_guard"]

"""
Request rules that answer from the balancer (docs/rules.md) and custom error pages, on an
http-mode frontend on 127.0.0.1:8089 in front of two demo servers on
127.0.0.1:9091-9092 (started in this same process; each answers with its
name).

    twistd -n lbkit --config examples/rules.py
    curl -i http://127.0.0.1:8089/                 # web1, then web2
    curl -i http://127.0.0.1:8089/account/me?x=1   # 301 to https://127.0.0.1:8089/account/me?x=1
    curl -i http://127.0.0.1:8089/old/page         # 302 to /new/page
    curl -i http://127.0.0.1:8089/admin            # 403 unless from 10.0.0.0/8; the connection closes
    curl -i http://127.0.0.1:8089/healthz          # 200 "ok", answered by lbkit itself
    curl -i http://127.0.0.1:8089/wp-login.php     # held 2 s (tarpit), then 500
    curl -i http://127.0.0.1:8089/maintenance/     # lbkit's 503, with this site's error page
"""

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer

web = Backend("web", [Server("web1", "127.0.0.1:9091"), Server("web2", "127.0.0.1:9092")])
# a backend whose only server does not run (nothing listens on 9099): lbkit answers 503
closed = Backend("closed", [Server("closed1", "127.0.0.1:9099")], retries=0)

MAINTENANCE_PAGE = b"<html><body><h1>Back soon</h1><p>We are doing maintenance.</p></body></html>\n"

listen = [
    http.Frontend(
        "tcp:8089:interface=127.0.0.1",
        routes=[http.Route(http.pathBegins("/maintenance"), closed)],
        default=web,
        name="rules",
        requestRules=[
            # evaluated in order, before the request is routed
            http.deny(when=http.allOf(http.pathBegins("/admin"), http.notMatching(http.sourceIn("10.0.0.0/8")))),
            http.tarpit(when=http.pathIs("/wp-login.php"), delay=2.0, limit=100),
            http.redirectScheme("https", when=http.pathBegins("/account")),
            http.redirect("/new/page", when=http.pathIs("/old/page")),
            http.respond(200, b"ok\n", when=http.pathIs("/healthz")),
            http.replacePath("^/static/v[0-9]+/", "/static/"),
            # header rules run when the request goes to its server
            http.setHeader("X-Real-IP", http.clientAddress),
        ],
        errorPages={503: http.errorPage(MAINTENANCE_PAGE), 403: b"<h1>Forbidden</h1>\n"},
    ),
    HelloServer("web1", "tcp:9091:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9092:interface=127.0.0.1"),
]

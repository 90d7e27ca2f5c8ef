"""
A response cache (docs/cache.md): an http-mode frontend on 127.0.0.1:8130
whose C{/static/} route keeps responses in a 16 MiB in-memory cache for 60
seconds (the balancer sets C{Cache-Control: max-age=60} on them, as
nginx's C{proxy_cache_valid} would), while the rest goes to two app
servers uncached (they say nothing about caching, and the frontend's cache
has no default TTL).  The servers are small demo servers started in this
process on 127.0.0.1:9170-9172; each answers with its name.  The stats
page on 127.0.0.1:8131 shows the caches' counters and, with admin / secret,
purges them.

    twistd -n lbkit --config examples/cache.py
    curl -i http://127.0.0.1:8130/static/logo.svg    # static1, from the server
    curl -i http://127.0.0.1:8130/static/logo.svg    # static1, from the cache: Age: 0, 1, ...
    curl http://127.0.0.1:8130/cart                  # app1, then app2: not cached
    curl http://127.0.0.1:8131/stats.json            # "caches": hits, misses, bytes ...
    curl -u admin:secret -H 'X-LBKit-Admin: 1' -X POST \\
        'http://127.0.0.1:8131/admin/purge?cache=static&prefix=127.0.0.1/static/'
    echo 'purge cache static key 127.0.0.1/static/logo.svg' | socat stdio unix:/tmp/lbkit-cache-example.sock

Change the password before using this anywhere but your own machine.
"""

from lbkit import Backend, Server, http, stats
from lbkit.demo import HelloServer

static = Backend("static", [Server("static1", "127.0.0.1:9170")])
app = Backend("app", [Server("app1", "127.0.0.1:9171"), Server("app2", "127.0.0.1:9172")])

listen = [
    http.Frontend(
        "tcp:8130:interface=127.0.0.1",
        routes=[
            http.Route(
                http.pathBegins("/static/"),
                static,
                responseRules=[http.setHeader("Cache-Control", "max-age=60")],
                cache=http.Cache(maxBytes=16 * 2**20, maxObjectBytes=2**20, name="static"),
            ),
        ],
        default=app,
        name="cached",
        cache=http.Cache(name="pages"),
    ),
    HelloServer("static1", "tcp:9170:interface=127.0.0.1"),
    HelloServer("app1", "tcp:9171:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9172:interface=127.0.0.1"),
    stats.Page(
        "tcp:8131:interface=127.0.0.1",
        admin=stats.Admin(users={"admin": "secret"}),
        socket="/tmp/lbkit-cache-example.sock",
    ),
]

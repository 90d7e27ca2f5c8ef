"""
Traffic control (docs/traffic.md): a rate limit by client address, a
maintenance page, and HTTP to HTTPS redirects, on 127.0.0.1, in front of
two demo servers on 127.0.0.1:9180-9181 (started in this same process;
each answers with its name).

    twistd -n lbkit --config examples/traffic.py

    # :8140 is the plain-http side: every request is sent to https
    curl -i http://127.0.0.1:8140/cart?id=3      # 301 to https://127.0.0.1:8140/cart?id=3

    # :8141 is the site, where the TLS terminator sends what it decrypted
    curl -i http://127.0.0.1:8141/               # web1, then web2 ...
    for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8141/; done
                                                 # 10 x 200, then 429 with Retry-After
    curl -i http://127.0.0.1:8141/shop/          # 503 with the maintenance page (shop is down)

    # the table of clients: the stats page and its command socket
    curl http://127.0.0.1:8142/stats.json        # "tables": per-client counters
    echo "show table clients" | socat - UNIX-CONNECT:traffic.sock
    echo "clear table clients 127.0.0.1" | socat - UNIX-CONNECT:traffic.sock
"""

from lbkit import Backend, Server, http, stats, traffic
from lbkit.demo import HelloServer

web = Backend("web", [Server("web1", "127.0.0.1:9180"), Server("web2", "127.0.0.1:9181")])
# the shop's only server does not run (nothing listens on 9189): lbkit answers 503, with the page below
shop = Backend("shop", [Server("shop1", "127.0.0.1:9189")], retries=0)

MAINTENANCE_PAGE = b"<html><body><h1>Back soon</h1><p>The shop is closed for maintenance.</p></body></html>\n"
SLOW_DOWN_PAGE = b"<html><body><h1>Slow down</h1><p>Too many requests; try again in a few seconds.</p></body></html>\n"

# per client address: requests and errors over 10 s, connections in flight
clients = traffic.Table("clients", key=traffic.bySource, size=100_000, expire=60.0,
                        counters=["conn_cur", "http_req_rate(10s)", "http_err_rate(10s)"])

listen = [
    http.Frontend(
        "tcp:8140:interface=127.0.0.1",
        default=web,
        name="http-in",
        requestRules=[http.redirectScheme("https", code=301)],
    ),
    http.Frontend(
        "tcp:8141:interface=127.0.0.1",
        routes=[http.Route(http.pathBegins("/shop"), shop)],
        default=web,
        name="site",
        requestRules=[
            traffic.track(clients),
            # a client that makes many errors (scanners) is turned away for a while
            http.deny(status=403, when=traffic.above(clients, "http_err_rate", 20)),
            # at most 10 requests per 10 s per address, counted in the table above
            traffic.RateLimit(10, 10.0, table=clients),
            # and at most 20 requests in flight per address
            traffic.ConnLimit(20),
        ],
        errorPages={503: http.errorPage(MAINTENANCE_PAGE), 429: http.errorPage(SLOW_DOWN_PAGE)},
    ),
    stats.Page("tcp:8142:interface=127.0.0.1", socket="traffic.sock"),
    HelloServer("web1", "tcp:9180:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9181:interface=127.0.0.1"),
]

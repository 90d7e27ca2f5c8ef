"""
Beyond the peers (docs/beyond.md): explain every decision, swap a
balancer or persistence live, drain as a Deferred, preview a change.

An http frontend on 127.0.0.1:8160 that explains each request (the
access log's `explain` field): /static to "static" (a consistent hash of
the path over c1-c3), the rest to "app" (least connections, with a
SRV cookie).  Stats page and admin API on 127.0.0.1:8161, command socket
./lbkit-beyond.sock; demo servers on 127.0.0.1:9201-9206 (a3 on 9206
is not in "app" yet).

    twistd -n lbkit --config examples/beyond.py
    curl http://127.0.0.1:8160/static/logo.png

Where would a request go, and why (nothing is sent)?

    echo 'explain web GET /static/logo.png from 10.0.0.7' | socat stdio unix:lbkit-beyond.sock
    curl -u admin:secret -H 'X-LBKit-Admin: 1' -X POST \\
        'http://127.0.0.1:8161/admin/explain?frontend=web&path=/static/logo.png'

What would adding a3 to the hash backend do?  Then do it, swap, drain:

    echo 'preview static add c4 127.0.0.1:9206' | socat stdio unix:lbkit-beyond.sock
    echo 'add server app/a3 127.0.0.1:9206' | socat stdio unix:lbkit-beyond.sock
    echo 'set balance app roundrobin' | socat stdio unix:lbkit-beyond.sock
    echo 'set persistence app source:600' | socat stdio unix:lbkit-beyond.sock
    echo 'del server app/a3 30' | socat stdio unix:lbkit-beyond.sock    # answers once drained and gone

In Python (a deploy script, a tac file): `yield server.drain()`, then
upgrade the server; `backend.setBalancer(LeastConn())`;
`backend.preview(remove=["c2"]).lines()`.
"""

from lbkit import Backend, Server, http, stats
from lbkit.balance import URI, LeastConn
from lbkit.demo import HelloServer
from lbkit.persistence import Cookie

static = Backend(
    "static",
    servers=[Server(f"c{i}", f"127.0.0.1:920{i}") for i in (1, 2, 3)],
    balance=URI(hashType="consistent"),
)
app = Backend(
    "app",
    servers=[Server("a1", "127.0.0.1:9204"), Server("a2", "127.0.0.1:9205")],
    balance=LeastConn(),
    persistence=Cookie("SRV"),
)

listen = [
    http.Frontend(
        "tcp:8160:interface=127.0.0.1",
        routes=[http.Route(http.pathBegins("/static"), static)],
        default=app,
        name="web",
        explain=True,
    ),
    stats.Page(
        "tcp:8161:interface=127.0.0.1",
        admin=stats.Admin(users={"admin": "secret"}),
        socket="lbkit-beyond.sock",
    ),
    *[HelloServer(f"c{i}", f"tcp:920{i}:interface=127.0.0.1") for i in (1, 2, 3)],
    HelloServer("a1", "tcp:9204:interface=127.0.0.1"),
    HelloServer("a2", "tcp:9205:interface=127.0.0.1"),
    HelloServer("a3", "tcp:9206:interface=127.0.0.1"),
]

"""
Operations: access logs, reload and graceful shutdown (docs/operations.md).

An http frontend on 127.0.0.1:8084 in front of three demo servers
(127.0.0.1:9051-9053), with the stats page and admin API on
127.0.0.1:8405 and the command socket ./lbkit-admin.sock.  Access lines
go to ./access.log as text and to ./access.json as JSON lines.

    twistd -n --pidfile=lbkit.pid lbkit --config examples/operations.py
    curl http://127.0.0.1:8084/            # web1, web2, web1, ...
    tail -f access.log access.json

Reload: edit this file (say, give web2 weight=3, or move web3 out of the
comment below), then any of

    kill -HUP $(cat lbkit.pid)
    echo reload | socat stdio unix:lbkit-admin.sock
    curl -u admin:secret -H 'X-LBKit-Admin: 1' -X POST http://127.0.0.1:8405/admin/reload

Drain a server by hand, and bring it back:

    echo 'set server web/web1 state drain' | socat stdio unix:lbkit-admin.sock
    echo 'set server web/web1 state ready' | socat stdio unix:lbkit-admin.sock

Stop: kill -TERM $(cat lbkit.pid) stops accepting at once and lets requests
in flight finish for up to `grace` seconds.
"""

from lbkit import Backend, Server, http, stats
from lbkit.demo import HelloServer
from lbkit.health import HTTPCheck
from lbkit.logs import AccessLog

web = Backend(
    "web",
    servers=[
        Server("web1", "127.0.0.1:9051"),
        Server("web2", "127.0.0.1:9052"),
        # Server("web3", "127.0.0.1:9053"),
    ],
    health=HTTPCheck("/", interval=2),
)

listen = [
    http.Frontend("tcp:8084:interface=127.0.0.1", default=web, name="ops"),
    stats.Page(
        "tcp:8405:interface=127.0.0.1",
        admin=stats.Admin(users={"admin": "secret"}),
        socket="lbkit-admin.sock",
    ),
    HelloServer("web1", "tcp:9051:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9052:interface=127.0.0.1"),
    HelloServer("web3", "tcp:9053:interface=127.0.0.1"),
]

accessLog = [
    AccessLog("access.log"),
    AccessLog("access.json", format="json"),
]

#: Seconds in-flight requests may take to finish on SIGTERM.
grace = 10

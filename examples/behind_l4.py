"""
lbkit in http mode behind a layer-4 balancer that sends the PROXY protocol
(HAProxy's C{bind ... accept-proxy}), with a deadline for request bodies
and its access log on standard output through lbkit's buffered writer.

Every connection must start with a PROXY v1 or v2 header: the client it
names is what X-Forwarded-For, source hashing and the access log see. A
connection without one is cut. A request body must arrive whole within 10
seconds (C{timeoutRequestBody}), so a trickling upload cannot hold a
server connection. Two small demo servers run in this same process.

    twistd -n lbkit --config examples/behind_l4.py
    curl --haproxy-protocol http://127.0.0.1:8080/     # web1, then web2
    curl http://127.0.0.1:8080/                        # cut: no PROXY header

docs/http.md ("PROXY protocol", "Slow request bodies") and
docs/operations.md (access-log destinations) say more.
"""

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer
from lbkit.logs import AccessLog

web = Backend("web", [Server("web1", "127.0.0.1:9001"), Server("web2", "127.0.0.1:9002")])

#: access-log lines go to standard output (buffered; dropped and counted,
#: never blocking, if nobody reads it)
accessLog = [AccessLog("-")]

listen = [
    http.Frontend(
        "tcp:8080:interface=127.0.0.1",
        default=web,
        name="behind_l4",
        acceptProxy=True,
        timeoutRequestBody=10.0,
    ),
    HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
]

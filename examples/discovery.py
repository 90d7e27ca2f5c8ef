"""
Servers from DNS: an http frontend on 127.0.0.1:8088 whose backend is the
SRV records of _http._tcp.web.example.test, looked up again on their TTL
(at least every second, at most every 30 s), in front of two small HTTP
servers started in this same process on 127.0.0.1:9081-9082, with health
checks on whatever is discovered.

The nameserver is LBKIT_DNS (default 127.0.0.1:5353).  A dnsmasq that
serves the records:

    dnsmasq -d --no-resolv --no-hosts --port=5353 --listen-address=127.0.0.1 \\
        --bind-interfaces --local=/example.test/ --local-ttl=5 \\
        --srv-host=_http._tcp.web.example.test,web1.example.test,9081,0,100 \\
        --srv-host=_http._tcp.web.example.test,web2.example.test,9082,0,100 \\
        --host-record=web1.example.test,127.0.0.1 --host-record=web2.example.test,127.0.0.1

    twistd -n lbkit --config examples/discovery.py
    curl http://127.0.0.1:8088/     # web1, then web2 (503 until the first answer)

Drop a --srv-host line and restart dnsmasq: the server drains and leaves.
See docs/discovery.md.
"""

import os

from lbkit import Backend, http
from lbkit.demo import HelloServer
from lbkit.discovery import SRV
from lbkit.health import HTTPCheck

web = Backend(
    "web",
    servers=SRV(
        "_http._tcp.web.example.test",
        nameservers=[os.environ.get("LBKIT_DNS", "127.0.0.1:5353")],
        minInterval=1.0,
        maxInterval=30.0,
        server=dict(maxconn=100),
    ),
    health=HTTPCheck("/", interval=2.0),
)

listen = [
    HelloServer("web1", "tcp:9081:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9082:interface=127.0.0.1"),
    http.Frontend("tcp:8088:interface=127.0.0.1", default=web, name="discovery-demo"),
]

"""
Stick tables shared through Redis: run this site file on two machines (or
twice on one, with other ports) and a client stays on its server whichever
balancer it reaches.

    redis-server --port 6379 &
    twistd -n lbkit --config examples/store.py
    curl http://127.0.0.1:8087/      # the same server every time
    redis-cli --scan --pattern 'lbkit:stick:*'

LBKIT_REDIS chooses another Redis (a client endpoint string, default
C{tcp:127.0.0.1:6379}).  See docs/store.md.
"""

import os

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer
from lbkit.persistence import StickySource
from lbkit.store import Redis

store = Redis(os.environ.get("LBKIT_REDIS", "tcp:127.0.0.1:6379"), prefix="lbkit:")

app = Backend(
    "app",
    servers=[Server("s1", "127.0.0.1:9071"), Server("s2", "127.0.0.1:9072")],
    persistence=StickySource(expire=600, store=store),
)

listen = [
    http.Frontend("tcp:8087:interface=127.0.0.1", default=app, name="shared"),
    HelloServer("s1", "tcp:9071:interface=127.0.0.1"),
    HelloServer("s2", "tcp:9072:interface=127.0.0.1"),
]

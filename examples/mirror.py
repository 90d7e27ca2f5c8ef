"""
Shadow traffic and scatter-gather (docs/beyond.md): an http
frontend on 127.0.0.1:8170 in front of three servers, app1-app3
(127.0.0.1:9210-9212, started in this process).

- `/search` is scattered to all three at once; the answer merges theirs
  (one line per server, in server order), and a server that does not answer
  within 2 seconds is left out (`partial="merge"`).
- Everything else goes to app1, and every second request is also copied to
  the shadow backend `next` (127.0.0.1:9213, `next1`), whose answers are
  thrown away; the stats page on 127.0.0.1:8171 shows what was mirrored and
  how the shadow's status classes differed from app1's.

    twistd -n lbkit --config examples/mirror.py
    curl http://127.0.0.1:8170/search               # app1, app2, app3
    curl http://127.0.0.1:8170/                     # app1 (and maybe a copy to next1)
    curl -s http://127.0.0.1:8171/stats.json | python3 -m json.tool | grep -A12 '"mirror"'
"""

from lbkit import Backend, Server, http, stats
from lbkit.demo import HelloServer

app = Backend("app", [Server(f"app{i}", f"127.0.0.1:{9209 + i}") for i in (1, 2, 3)])
web = Backend("web", [Server("app1", "127.0.0.1:9210")])
shadow = Backend("next", [Server("next1", "127.0.0.1:9213")], retries=0)


def merge(parts):
    """One line per server that answered: its name and its body."""
    lines = [b"%s: %s" % (p.server.name.encode(), p.body.strip()) for p in parts]
    return http.Answer(200, body=b"\n".join(lines) + b"\n")


listen = [
    http.Frontend(
        "tcp:8170:interface=127.0.0.1",
        [
            http.Route(http.pathBegins("/search"), http.ScatterGather(app, merge, timeout=2.0, partial="merge")),
            http.Route(http.pathBegins("/"), web, requestRules=[http.Mirror(shadow, fraction=0.5)]),
        ],
        default=web,
        name="mirror",
    ),
    HelloServer("app1", "tcp:9210:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9211:interface=127.0.0.1"),
    HelloServer("app3", "tcp:9212:interface=127.0.0.1"),
    HelloServer("next1", "tcp:9213:interface=127.0.0.1"),
    stats.Page("tcp:8171:interface=127.0.0.1"),
]

"""
HTTP/2 without TLS (h2c with prior knowledge) on an http-mode frontend on
127.0.0.1:8100: a client that opens with the HTTP/2 connection preface is
spoken to in HTTP/2, any other in HTTP/1.1, on the same port (as HAProxy's
C{mode http} frontends do).  Each stream goes to the servers app1 and app2
(demo servers started in this same process on 127.0.0.1:9140-9141, each
answering with its name) in HTTP/1.1, with C{X-Forwarded-Proto: http}.

    twistd -n lbkit --config examples/h2c.py
    curl --http2-prior-knowledge http://127.0.0.1:8100/   # app1, over HTTP/2
    curl http://127.0.0.1:8100/                           # app2, over HTTP/1.1

C{http2=True} is the default; C{http2=False} turns h2c off (the preface is
then a bad request, 505).
"""

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer

app = Backend("app", [Server("app1", "127.0.0.1:9140"), Server("app2", "127.0.0.1:9141")])

listen = [
    http.Frontend("tcp:8100:interface=127.0.0.1", default=app, name="h2c", http2=True),
    HelloServer("app1", "tcp:9140:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9141:interface=127.0.0.1"),
]

"""
Static and dynamic content on separate servers: paths under C{/static/}
or ending in .css, .js, .png or .jpg go to server static1; everything else
to the application servers app1 and app2.  An http-mode frontend on
127.0.0.1:8080; the three servers are small demo servers started in this
same process on 127.0.0.1:9001-9003, each answering with its name.

    twistd -n lbkit --config examples/static_dynamic.py
    curl http://127.0.0.1:8080/static/logo.svg   # static1
    curl http://127.0.0.1:8080/css/site.css      # static1
    curl http://127.0.0.1:8080/cart              # app1, then app2, ...
"""

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer

static = Backend("static", [Server("static1", "127.0.0.1:9001")])
app = Backend("app", [Server("app1", "127.0.0.1:9002"), Server("app2", "127.0.0.1:9003")])

isStatic = http.anyOf(
    http.pathBegins("/static/"),
    http.pathEnds(".css", ".js", ".png", ".jpg"),
)

listen = [
    http.Frontend(
        "tcp:8080:interface=127.0.0.1",
        routes=[http.Route(isStatic, static)],
        default=app,
        name="static_dynamic",
    ),
    HelloServer("static1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("app1", "tcp:9002:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9003:interface=127.0.0.1"),
]

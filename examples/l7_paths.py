"""
Routing by path (HAProxy's C{path_beg} ACLs): C{/web} goes to servers web1
and web2, C{/blog} to servers blog1 and blog2, on an http-mode frontend on
127.0.0.1:8080.  The four servers are small demo servers started in this
same process on 127.0.0.1:9001-9004; each answers with its name.

    twistd -n lbkit --config examples/l7_paths.py
    curl http://127.0.0.1:8080/web/       # web1, then web2, ...
    curl http://127.0.0.1:8080/blog/      # blog1, then blog2, ...
    curl http://127.0.0.1:8080/other      # no route matches: the default, web
"""

from lbkit import Backend, Server, http
from lbkit.demo import HelloServer

web = Backend("web", [Server("web1", "127.0.0.1:9001"), Server("web2", "127.0.0.1:9002")])
blog = Backend("blog", [Server("blog1", "127.0.0.1:9003"), Server("blog2", "127.0.0.1:9004")])

listen = [
    http.Frontend(
        "tcp:8080:interface=127.0.0.1",
        routes=[
            http.Route(http.pathBegins("/web"), web),
            http.Route(http.pathBegins("/blog"), blog),
        ],
        default=web,
        name="l7_paths",
    ),
    HelloServer("web1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("web2", "tcp:9002:interface=127.0.0.1"),
    HelloServer("blog1", "tcp:9003:interface=127.0.0.1"),
    HelloServer("blog2", "tcp:9004:interface=127.0.0.1"),
]

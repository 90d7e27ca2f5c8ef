"""
HTTP/3 to clients: one TLS http frontend on 127.0.0.1:8094 serves HTTP/1.1
and HTTP/2 over TCP and HTTP/3 over QUIC on UDP port 8094, and advertises
HTTP/3 with Alt-Svc.  See docs/http.md, "HTTP/3".  Needs the aioquic
package (pip install 'lbkit[http3]').

No key is shipped: make a throw-away CA and a certificate for localhost
first, into the directory named by $LBKIT_TLS_DIR (default: ./certs):

    mkdir -p certs && cd certs
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout ca.key -out ca.pem -days 30 -subj /CN=demo-ca
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout localhost.key -out localhost.csr -subj /CN=localhost
    openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -CAcreateserial \\
        -days 30 -out localhost.crt -extfile <(printf "subjectAltName=DNS:localhost")
    cat localhost.key localhost.crt > localhost.pem
    cd ..
    twistd -n lbkit --config examples/http3.py

    # over TCP: the answer carries  alt-svc: h3=":8094"; ma=86400
    curl -si --cacert certs/ca.pem https://localhost:8094/
    # over QUIC, with aioquic's example client (or a curl built with HTTP/3)
    curl --http3-only --cacert certs/ca.pem https://localhost:8094/

The access log says HTTP/3.0 in the request line of each HTTP/3 request.
With C{quicRetry=True} a new QUIC client's first Initial is answered with a
Retry token that it must echo before lbkit keeps any state for it.
"""

import os

from lbkit import Backend, Server, http, tls
from lbkit.demo import HelloServer

certs = os.environ.get("LBKIT_TLS_DIR", "certs")

app = Backend("app", [Server("app1", "127.0.0.1:9093"), Server("app2", "127.0.0.1:9094")])

listen = [
    http.Frontend(
        "tcp:8094:interface=127.0.0.1",
        tls=tls.Certificates(default=os.path.join(certs, "localhost.pem")),
        http3=True,
        quicRetry=True,  # a new client first echoes a Retry token (proof of its address)
        default=app,
        name="h3",
    ),
    HelloServer("app1", "tcp:9093:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9094:interface=127.0.0.1"),
]

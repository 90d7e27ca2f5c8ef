"""
TLS termination with one certificate per host name (SNI), and SNI
pass-through in tcp mode, on 127.0.0.1.  See docs/tls.md.

No key is shipped: make a throw-away CA and certificates first, into the
directory named by $LBKIT_TLS_DIR (default: ./certs):

    mkdir -p certs && cd certs
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout ca.key -out ca.pem -days 30 -subj /CN=demo-ca
    for h in default a.example b.example; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
          -keyout $h.key -out $h.csr -subj /CN=$h
      openssl x509 -req -in $h.csr -CA ca.pem -CAkey ca.key -CAcreateserial \\
          -days 30 -out $h.crt -extfile <(printf "subjectAltName=DNS:$h")
      cat $h.key $h.crt > $h.pem
    done
    cd ..
    twistd -n lbkit --config examples/tls_sni.py

    # terminated on :8443, certificate chosen by SNI, X-Forwarded-Proto: https
    curl --cacert certs/ca.pem --resolve a.example:8443:127.0.0.1 https://a.example:8443/
    # passed through untouched on :9443 to the TLS frontend on :8443
    openssl s_client -connect 127.0.0.1:9443 -servername b.example -CAfile certs/ca.pem -brief
    # plain http on :8080, re-encrypted to :8443 and checked against the CA
    curl http://127.0.0.1:8080/
"""

import os

from lbkit import Backend, Server, http, tcp, tls
from lbkit.demo import HelloServer

certs = os.environ.get("LBKIT_TLS_DIR", "certs")


def pem(name: str) -> str:
    return os.path.join(certs, f"{name}.pem")


app = Backend("app", [Server("app1", "127.0.0.1:9001"), Server("app2", "127.0.0.1:9002")])

# Pass-through: the TLS session goes untouched to the https frontend below
# (plain TCP from lbkit's point of view, so no tls=True here).
passthrough = Backend("passthrough", [Server("https", "127.0.0.1:8443")])

# Re-encryption: plain http on 8080, TLS to the https frontend, checked
# against the demo CA for the name a.example.
secureApp = Backend("secure", [Server("tls1", "127.0.0.1:8443", tls=True, ca=pem("ca"), sni="a.example")])

listen = [
    http.Frontend(
        "tcp:8443:interface=127.0.0.1",
        tls=tls.Certificates(
            default=pem("default"),
            byHost={"a.example": pem("a.example"), "b.example": pem("b.example")},
        ),
        default=app,
        name="https",
    ),
    tcp.Frontend(
        "tcp:9443:interface=127.0.0.1",
        routes=[tcp.Route(tcp.sniIs("a.example", "b.example"), passthrough)],
        backend=passthrough,
        name="sni-passthrough",
    ),
    http.Frontend("tcp:8080:interface=127.0.0.1", default=secureApp, name="reencrypt"),
    HelloServer("app1", "tcp:9001:interface=127.0.0.1"),
    HelloServer("app2", "tcp:9002:interface=127.0.0.1"),
]

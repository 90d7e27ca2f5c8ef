"""
Circuit breakers and retries (docs/breakers.md): an http frontend on
127.0.0.1:8095 in front of two servers, of which only app1 (127.0.0.1:9095,
started in this process) is running; app2's port, 9096, refuses.  Requests
that land on app2 are retried on app1 (`connect-failure`, within a retry
budget and at most 2 retries at once); at most 10 requests may wait for a
server slot (app1 takes 20 at once); a 503 from a server is retried too.

    twistd -n lbkit --config examples/breakers.py
    curl http://127.0.0.1:8095/                     # app1, every time
    curl -s http://127.0.0.1:8407/stats.json | python3 -m json.tool | grep -A12 breakers
    curl -s http://127.0.0.1:8407/metrics | grep breaker
"""

from lbkit import Backend, RetryBudget, Server, http, stats
from lbkit.balance import RoundRobin
from lbkit.demo import HelloServer

app = Backend(
    "app",
    servers=[
        Server("app1", "127.0.0.1:9095", maxconn=20),
        Server("app2", "127.0.0.1:9096", maxconn=20),  # nothing listens there
    ],
    balance=RoundRobin(),
    retries=3,
    maxPending=10,
    maxRetries=2,
    retryBudget=RetryBudget(budgetPercent=20.0, minRetryConcurrency=3),
    retryOn=("connect-failure", "empty-response", 503),
)

listen = [
    http.Frontend("tcp:8095:interface=127.0.0.1", default=app, name="breakers"),
    HelloServer("app1", "tcp:9095:interface=127.0.0.1"),
    stats.Page("tcp:8407:interface=127.0.0.1"),
]

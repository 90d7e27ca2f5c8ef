Stats page, /stats.json, Prometheus /metrics, admin HTTP API and command socket, access-log destinations, SIGHUP reload and graceful shutdown.

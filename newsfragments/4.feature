http (layer 7) mode: routing matchers, keep-alive server pool, streaming bodies, X-Forwarded-*, header rules, WebSocket tunnel, 400/408/502/503/504 answers.

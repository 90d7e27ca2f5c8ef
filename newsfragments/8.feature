TLS termination with SNI certificates, TLS to servers with verification, SNI pass-through routing in tcp mode, client certificates.

http mode: the routeRequest, serverChosen and finished hooks of a custom HTTPFrontendProtocol subclass (factory= with a protocol) now run for HTTP/2 streams too, one instance of the class per stream.

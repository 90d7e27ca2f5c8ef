"""
lbkit: a load balancer and reverse proxy framework built on Twisted.

A site file builds L{Server}s, L{Backend}s and frontends (L{lbkit.tcp}) and
lists them in C{listen}; C{twistd -n lbkit --config site.py} runs it.
"""

from lbkit._model import Backend, Context, Server, ServerListenerMixin, ServerState

__all__ = ["Server", "Backend", "Context", "ServerState", "ServerListenerMixin"]
__version__ = "0.1.0"

"""
lbkit: a load balancer and reverse proxy framework built on Twisted.

A site file builds L{Server}s, L{Backend}s and frontends (L{lbkit.tcp}) and
lists them in C{listen}; C{twistd -n lbkit --config site.py} runs it.
"""

from lbkit._backend import Backend
from lbkit._breakers import RetryBudget
from lbkit._connect import serverEndpoint
from lbkit._model import Context, Server, ServerListenerMixin, ServerState, setEndpointBuilder

# Server.endpoint() builds endpoints with the connecting code, a layer above
# the model: installed here, where every use of lbkit starts.
setEndpointBuilder(serverEndpoint)
del serverEndpoint, setEndpointBuilder

__all__ = ["Server", "Backend", "Context", "ServerState", "ServerListenerMixin", "RetryBudget"]
__version__ = "0.1.0"

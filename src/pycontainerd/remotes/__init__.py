"""The registry client (OCI distribution): references, hosts, auth, resolve, fetch and push.

Used by the client library (``pyctr images pull`` pulls on the client side, like ctr) and
by the daemon (CRI pulls).  Pure asyncio + httpx; no gRPC.
"""

from ..images.reference import Reference, normalize, parse, parse_normalized
from .auth import Authorizer, Challenge, Credentials, parse_challenges
from .fetcher import Fetcher
from .hosts import Endpoint, configure, from_mirrors, parse_hosts_toml
from .pusher import Pusher
from .resolver import Resolver

__all__ = [
    "Authorizer", "Challenge", "Credentials", "Endpoint", "Fetcher", "Pusher", "Reference", "Resolver",
    "configure", "from_mirrors", "normalize", "parse", "parse_challenges", "parse_hosts_toml",
    "parse_normalized",
]

"""The registry client (OCI distribution): hosts, auth, resolve, fetch, push, and the pull algorithm.

Used by the client library (``pyctr images pull`` pulls on the client side, like ctr) and
by the daemon (CRI pulls).  Pure asyncio + httpx; no gRPC.  Import the modules themselves
(``remotes.resolver`` ...): the package imports nothing, so a daemon that never pulls never
loads httpx.
"""

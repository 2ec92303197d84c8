"""CRI streaming: the server for exec, attach and port-forward (``server.py``) and its protocols."""

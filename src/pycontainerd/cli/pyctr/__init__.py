"""pyctr: containerd's ``ctr`` commands, friendlier, on ``pycontainerd.client``."""

"""Command-line tools built on ``pycontainerd.client``: pyctr (ctr's commands) and pycrictl."""

"""Image objects: media types, manifests/indexes/configs, platforms, walking, archives (pure)."""

"""Layers: apply a tar layer onto a directory, compute a layer from two trees, compression."""

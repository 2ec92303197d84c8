"""The CRI plugin (``io.containerd.grpc.v1.cri``): kubelet's RuntimeService and ImageService.

``plugin.py`` registers it and wires the daemon's stores; ``images.py`` and ``runtime.py``
are the servicers (translation only); ``imagestore.py`` is the CRI view of images (pull,
list, resolve, remove) in namespace ``k8s.io``.
"""

"""The CRI plugin (``io.containerd.grpc.v1.cri``): kubelet's RuntimeService and ImageService.

``plugin.py`` registers it and wires the daemon's stores; ``images.py`` and ``runtime.py``
are the servicers (translation only); ``imagestore.py`` is the CRI view of images (pull,
list, resolve, remove) in namespace ``k8s.io``.

Building pods and containers on it: add the RPCs as methods of ``runtime.RuntimeService``
(or of a servicer module per RPC group that it delegates to) — whatever the class defines
is served, the rest answers UNIMPLEMENTED by name.  ``CriPlugin.images.resolve(ref)`` turns
a container's image reference into a ``CriImage`` (id, config JSON, ``chain_id`` = the
committed snapshot to ``prepare`` the rootfs from, in ``CriPlugin.images.snapshotter``);
``RuntimeState.network_ready`` is where CNI's status goes.
"""

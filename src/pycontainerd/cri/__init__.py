"""The CRI plugin (``io.containerd.grpc.v1.cri``): kubelet's RuntimeService and ImageService.

``plugin.py`` registers it; ``wiring.py`` (imported only when the plugin starts) wires the
daemon's stores; ``images.py`` and ``runtime.py`` are the servicers (translation only);
``imagestore.py`` is the CRI view of images (pull, list, resolve, remove) in namespace
``k8s.io``; ``sandbox.py`` the pods (infra task, netns, CNI), ``containers.py`` the containers
in them, ``crilog.py`` the CRI log format and the daemon-side copy of a container's
stdout/stderr FIFOs into its log file.

Pods and containers are container records in ``k8s.io`` (label ``io.cri-containerd.kind``
= ``sandbox``/``container``; their CRI metadata in the extensions
``io.cri-containerd.{sandbox,container}.metadata``, JSON), run by the task manager's public
API; a restarted daemon lists them and reopens the running containers' log FIFOs.  A pod's
runtime handler (``handlers.py``) is their records' runtime (its ``runtime_type`` and options,
as ``ctr c info`` shows them), so the task manager runs them on that runtime's shim; its
``base_runtime_spec`` (read when the plugin starts) is what its containers' specs start from, its
``cni_conf_dir`` networks its pods (a CNI load of its own), its ``snapshotter`` holds its pods' and
containers' snapshots (the record names it; images are unpacked there on demand).

Pod stats (PodSandboxStats/ListPodSandboxStats) read, like containerd, the pod's
``cgroup_parent`` (no parent: an error; the list leaves such pods out where containerd fails
it), the infra process's ``/proc/<pid>/net/dev`` (eth0 the default interface, lo left out)
and count the running containers' processes. RuntimeConfig reports the cgroup driver from
the default runtime's ``SystemdCgroup`` (containerd 1.6 answers it UNIMPLEMENTED).
GetContainerEvents streams the containers' created/started/stopped/deleted steps as
``containers.py`` takes them (``events.py``: bounded queue per subscriber, a laggard dropped);
an exit of the container's own is reported when the kubelet stops or removes it.
ListMetricDescriptors/ListPodSandboxMetrics: cAdvisor-named memory gauges (pod cgroup and
containers) and per-interface network counters of the pod.

Security contexts (``security.py``, containerd 1.6's rules): seccomp RuntimeDefault/Unconfined/
Localhost and the deprecated strings, AppArmor (nothing applied on a host without it; a Localhost
profile refused there), users and groups (SupplementalGroupsPolicy Strict too), no_new_privs,
masked/read-only paths, privileged, pid namespaces POD/CONTAINER/NODE/TARGET.

The Stream* calls of CRI list streaming (1.36) answer their List* call's items in batches.
ImageFsInfo names the snapshotter's filesystem for the images (every snapshot, as containerd
counts) and for the containers (1.29's container_filesystems: the writable snapshots).

Exec, Attach and PortForward answer a URL of the daemon's streaming server
(``pycontainerd.streaming``, started with the plugin; ``streaming.py`` here holds the RPCs'
checks and the runtime side: exec processes, attach to the daemon-held stdio, dialling
in the pod's network namespace).  When an attach's stdin ends, a ``stdin_once`` container's stdin
is closed if the attach has no terminal; otherwise the attach detaches (containerd 1.6's rule).

UpdatePodSandboxResources (1.33) records the pod's new overhead and resources in its config (the
pod-level cgroup is the kubelet's, resized before the call).  CheckpointContainer answers
UNIMPLEMENTED (as containerd 1.6), saying it needs CRIU; a method a servicer lacks would answer
UNIMPLEMENTED by name (``runtime.unimplemented_methods``).
"""

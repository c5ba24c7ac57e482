"""A process kubelet: the one stand-in of the test cluster, for what cannot run here (a kubelet with a GPU
node and a container runtime).

It registers a Node with CPU, memory and nvidia.com/gpu capacity, runs the Pods the real scheduler binds
to it through a runtime (`runtime.ProcessRuntime`, the default: each container as a local process; or,
chosen per namespace, `podman_runtime.PodmanRuntime`: the built image under podman, as a cluster runs
it), writes Pod status as a kubelet does (phases, the kubelet's conditions, container states, termination
messages, restarts), stops containers on deletion (SIGTERM, SIGKILL after the grace period, then the final
delete), and serves container logs to the API server so that `kubectl logs` works. Node faults can be
simulated on chosen Pods (`Kubelet.simulate`): OOMKilled, ErrImagePull/ImagePullBackOff, eviction with its
DisruptionTarget.

Modules: `spec` (pure: environment, mounts, securityContext -> ContainerSpec), `status` (pure: the Pod
status), `volumes`, `runtime` (the runtime interface and the process runtime), `podman_runtime` (the real
images, through tests/images/podman_args.py), `worker` (one Pod's life), `node`, `logs` (the HTTPS log
endpoint), `kubelet` (the watch and the test-facing API).
"""

from tests.controlplane.kubelet.kubelet import SIMULATIONS, Kubelet, NamespaceView
from tests.controlplane.kubelet.node import Capacity

__all__ = ["SIMULATIONS", "Capacity", "Kubelet", "NamespaceView"]

#!/usr/bin/env bash
# Runs the operator on this machine exactly as its Deployment runs it: the variables of its ConfigMap, and a
# kubeconfig for its ServiceAccount (a short-lived token from `kubectl create token`), so it has the
# Deployment's rights and no more. Scale the Deployment to 0 first: two operators must never run at once.
#
#   kubectl -n waste-detection scale deployment waste-operator --replicas=0
#   bash scripts/run-operator-locally.sh [NAMESPACE]     # NAMESPACE of the ConfigMap and ServiceAccount
#
# Uses the current kubectl context (or $KUBECONFIG) to read the ConfigMap and request the token. Any
# variable already set in the environment wins over the ConfigMap's (e.g. LIVENESS_ENDPOINT, LOG_LEVEL).
set -euo pipefail
namespace="${1:-waste-detection}"
kubectl="${KUBECTL:-kubectl}"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# The ConfigMap's data as NAME=value lines (values are single words or comma lists in this ConfigMap).
"$kubectl" -n "$namespace" get configmap waste-operator-config \
  -o go-template='{{range $k, $v := .data}}{{$k}}={{$v}}{{"\n"}}{{end}}' >"$workdir/config.env"
while IFS='=' read -r name value; do
  [[ -z "$name" || -n "${!name:-}" ]] || export "$name=$value"
done <"$workdir/config.env"
# Outside the cluster the Pod's 0.0.0.0:8080 would be every interface of this machine: listen on loopback.
export LIVENESS_ENDPOINT="${LIVENESS_ENDPOINT/0.0.0.0/127.0.0.1}"

# A kubeconfig with the cluster of the current context and the ServiceAccount's token, nothing else.
server="$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
ca="$("$kubectl" config view --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
token="$("$kubectl" -n "$namespace" create token waste-operator --duration=1h)"
sa_config="$workdir/kubeconfig"
"$kubectl" config --kubeconfig="$sa_config" set-cluster cluster --server="$server" >/dev/null
"$kubectl" config --kubeconfig="$sa_config" set clusters.cluster.certificate-authority-data "$ca" >/dev/null
"$kubectl" config --kubeconfig="$sa_config" set-credentials waste-operator --token="$token" >/dev/null
"$kubectl" config --kubeconfig="$sa_config" set-context operator --cluster=cluster --user=waste-operator \
  --namespace="$namespace" >/dev/null
"$kubectl" config --kubeconfig="$sa_config" use-context operator >/dev/null
echo "waste-operator: as system:serviceaccount:$namespace:waste-operator, watching $WATCH_NAMESPACES" >&2
# Not exec: the trap removes the token's kubeconfig when the operator stops.
KUBECONFIG="$sa_config" "${PYTHON:-python3}" -m waste_operator

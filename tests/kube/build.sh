#!/usr/bin/env bash
# Builds the Kubernetes test control plane and node from Go modules, once:
#
#   tests/kube (k8s.io/kubernetes v1.33.x) -> target/kube/bin/kube-apiserver
#                                           -> target/kube/bin/kubectl
#                                           -> target/kube/bin/kube-harness (embeds etcd)
#                                           -> target/kube/bin/kubelet, kube-scheduler,
#                                              kube-controller-manager, kube-proxy (--node)
#   tests/kube/cmd/{pause,probe} + mkimage -> target/kube/images/pause.tar
#                                              (registry.k8s.io/pause:3.10, the sandbox image)
#                                           -> target/kube/images/probe.tar
#                                              (sluice.test/probe:0.1.0, the node tests' workload)
#   tests/helm (helm.sh/helm/v3)            -> target/kube/bin/helm
#
# One `go build` makes every Kubernetes binary, so they share the compile of
# the packages they have in common. CGO_ENABLED=0: static binaries, the
# kubelet included (upstream builds it so too); the images are FROM scratch.
# Go's module, build and path caches live under target/go, so a second run
# (and cargo's target/ caching) reuses them. A stamp of the inputs (go.mod,
# go.sum, the harness source, this script, the Go version) beside the binaries
# makes the next run a no-op while nothing changed.
# From an empty target/go, everything, downloads included: 6 to 7 minutes on
# 2 cores with nothing else running, up to 17 for the control plane alone on
# a busy machine (README).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

k8s_version=v1.33.13 # keep in step with tests/kube/go.mod
helm_version=v3.18.6 # keep in step with tests/helm/go.mod
bin="$root/target/kube/bin"
images="$root/target/kube/images"
stamp="$bin/.stamp"

# The toolchain's usual place, for shells whose PATH lacks it.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "tests/kube/build.sh: a Go toolchain (1.24 or later) is required" >&2; exit 1; }

export GOMODCACHE="$root/target/go/mod"
export GOCACHE="$root/target/go/cache"
export GOPATH="$root/target/go/path"
# -modcacherw: the module cache stays deletable (cargo clean, rm -r target).
export GOFLAGS="-buildvcs=false -modcacherw"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

want="$(
  go version
  echo "$k8s_version $helm_version"
  cat tests/kube/go.mod tests/kube/go.sum tests/helm/go.mod tests/helm/go.sum \
    tests/kube/build.sh
  find tests/kube/cmd -type f -name '*.go' | sort | xargs cat
)"
want="$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)"
have=""
[ -f "$stamp" ] && have="$(cat "$stamp")"
all_there=1
for b in kube-apiserver kubectl kube-harness helm kubelet kube-scheduler \
  kube-controller-manager kube-proxy mkimage pause probe; do
  [ -x "$bin/$b" ] || all_there=0
done
for i in pause probe; do
  [ -f "$images/$i.tar" ] || all_there=0
done
if [ "$all_there" = 1 ] && [ "$want" = "$have" ]; then
  exit 0
fi

echo "tests/kube/build.sh: building kube-apiserver, kubectl, kubelet, kube-scheduler," \
  "kube-controller-manager, kube-proxy ($k8s_version), kube-harness, helm ($helm_version)" \
  "into target/kube/bin, the node's images into target/kube/images"
start=$(date +%s)
mkdir -p "$bin" "$images"
rm -f "$stamp"

# What `kubectl version` and the API server's /version report; helm reads the
# latter for .Capabilities.KubeVersion.
minor="${k8s_version#v1.}"
minor="${minor%%.*}"
k8s_ldflags="-s -w
  -X k8s.io/component-base/version.gitVersion=$k8s_version
  -X k8s.io/component-base/version.gitMajor=1
  -X k8s.io/component-base/version.gitMinor=$minor
  -X k8s.io/component-base/version.gitTreeState=clean
  -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version
  -X k8s.io/client-go/pkg/version.gitMajor=1
  -X k8s.io/client-go/pkg/version.gitMinor=$minor"
(
  cd tests/kube
  go build -trimpath -ldflags="$k8s_ldflags" -o "$bin/" \
    ./cmd/kube-harness ./cmd/mkimage ./cmd/pause ./cmd/probe \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-proxy
)
# The name is containerd's sandbox_image in kube-harness --node (node.go).
"$bin/mkimage" --name registry.k8s.io/pause:3.10 --out "$images/pause.tar" \
  --entrypoint /pause --user 65535:65535 "$bin/pause=/pause"
"$bin/mkimage" --name sluice.test/probe:0.1.0 --out "$images/probe.tar" \
  --entrypoint /probe --user 65532:65532 "$bin/probe=/probe"
(
  cd tests/helm
  # As helm's Makefile: the Kubernetes version `helm template` and `helm lint`
  # assume is the one its client-go modules are from.
  go build -trimpath -ldflags="-s -w
    -X helm.sh/helm/v3/internal/version.version=$helm_version
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$bin/" helm.sh/helm/v3/cmd/helm
)
echo "$want" >"$stamp"
echo "tests/kube/build.sh: done in $(($(date +%s) - start)) s"

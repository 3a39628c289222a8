#!/usr/bin/env bash
# The end-to-end suite (test-harness/envoy-harness/tests/e2e.rs) against a real Istio
# ingress gateway in a kind cluster: the same tests `make test` runs against the local
# gateway, now through istiod's own translation of istio/ and envoyfilter-manifests/.
#
#   test-harness/kind/run.sh          (from anywhere; needs Docker, kubectl, cargo, openssl, curl)
#
# NOT RUN ON OUR MACHINES: they have no Docker daemon, so this script has only been checked
# statically there (bash -n, shellcheck, every referenced file and pin). It runs in the
# GitHub workflow's `kind` job. KEEP_CLUSTER=1 leaves the cluster up for a look afterwards.
#
# What it does, in order:
#  1. kind (pinned version + sha256) and istioctl (pinned Istio release + sha256, the
#     release the manifests target: proxyv2:1.31.1, see README "Envoy and Istio versions");
#  2. the modules (make wasm) and the mock-upstream image (static binary, FROM scratch);
#  3. a three-node kind cluster (pinned node image, cluster.yaml), Istio with istio-cni
#     (minimal profile: istiod only; the gateway is istio/ingressgateway/ itself);
#  4. a dev CA: the gateway's TLS secret for api.exchange.example.com, and the issuer's
#     JWKS endpoint in the cluster as https://auth.exchange.example.com (dev-issuer.yaml);
#  5. istio/ (through overlay/: without the prometheus-operator objects, the issuer's CA)
#     and envoyfilter-manifests/, server-side, as the README's Deploy section does;
#  6. the three mock upstreams as svc-trading-api / svc-wallet / svc-risk-control;
#  7. port-forwards to the gateway and to the mocks' control APIs, then the suite.
# Everything it started is removed on exit (trap), failed or not.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/test-harness/kind
WORK=$ROOT/build/kind
BIN=$WORK/bin
CLUSTER=${CLUSTER:-svc-gateway-e2e}

KIND_VERSION=v0.29.0
KIND_SHA256=c72eda46430f065fb45c5f70e7c957cc9209402ef309294821978677c8fb3284
# Kubernetes 1.33 (the schemas make manifests-test validates against), the image kind
# v0.29.0 publishes for it.
KIND_NODE_IMAGE=kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f
ISTIO_VERSION=1.31.1
ISTIO_ARCHIVE=istio-$ISTIO_VERSION-linux-amd64.tar.gz
ISTIO_SHA256=cb4af2e8a099acfc51368c1d15d4deab8321ae628554d4ee5c74f62ebe775857
MOCK_IMAGE=svc-gateway/mock-upstream:e2e

# Local ports of the port-forwards.
GATEWAY_HTTPS_LOCAL=18443
GATEWAY_HTTP_LOCAL=18080
declare -A MOCK_CONTROL_LOCAL=([svc-trading-api]=19080 [svc-wallet]=19081 [svc-risk-control]=19082)
declare -A MOCK_NAMESPACE=([svc-trading-api]=trading [svc-wallet]=wallet [svc-risk-control]=risk)

log() { printf '\n==> %s\n' "$*"; }

FORWARDS=()
CLUSTER_CREATED=0
cleanup() {
  local status=$?
  for pid in "${FORWARDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ $CLUSTER_CREATED == 1 && ${KEEP_CLUSTER:-0} != 1 ]]; then
    if [[ $status != 0 ]]; then
      # What went wrong stays in the job log: the gateway's and istiod's view.
      kubectl get pods -A -o wide || true
      kubectl -n gateway logs deploy/istio-ingressgateway --tail=100 || true
      kubectl -n istio-system logs deploy/istiod --tail=50 || true
    fi
    "$BIN/kind" delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap cleanup EXIT

for tool in docker kubectl cargo openssl curl sha256sum; do
  command -v "$tool" >/dev/null || { echo "run.sh needs $tool" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "run.sh needs a running Docker daemon" >&2; exit 1; }
mkdir -p "$BIN" "$WORK/pki"
export PATH=$BIN:$PATH

# ---------------------------------------------------------------- 1. tools
log "kind $KIND_VERSION, istioctl $ISTIO_VERSION"
if [[ ! -x $BIN/kind ]] || [[ $("$BIN/kind" version) != *"$KIND_VERSION "* ]]; then
  curl -fsSLo "$WORK/kind" "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64"
  echo "$KIND_SHA256  $WORK/kind" | sha256sum -c -
  install -m 0755 "$WORK/kind" "$BIN/kind"
fi
if [[ ! -x $BIN/istioctl ]] || [[ $("$BIN/istioctl" version --remote=false) != *"$ISTIO_VERSION"* ]]; then
  base=https://github.com/istio/istio/releases/download/$ISTIO_VERSION
  curl -fsSLo "$WORK/$ISTIO_ARCHIVE" "$base/$ISTIO_ARCHIVE"
  curl -fsSLo "$WORK/$ISTIO_ARCHIVE.sha256" "$base/$ISTIO_ARCHIVE.sha256"
  # The pin, and the checksum the release publishes: both must agree with the download.
  echo "$ISTIO_SHA256  $WORK/$ISTIO_ARCHIVE" | sha256sum -c -
  [[ $(cut -d' ' -f1 "$WORK/$ISTIO_ARCHIVE.sha256") == "$ISTIO_SHA256" ]]
  tar -xzf "$WORK/$ISTIO_ARCHIVE" -C "$WORK" "istio-$ISTIO_VERSION/bin/istioctl"
  install -m 0755 "$WORK/istio-$ISTIO_VERSION/bin/istioctl" "$BIN/istioctl"
fi

# ---------------------------------------------------------------- 2. modules and image
log "modules (make wasm) and the mock-upstream image"
make -C "$ROOT" --no-print-directory wasm
# Statically linked (glibc, crt-static) so the image needs no libc: FROM scratch. The
# explicit --target keeps RUSTFLAGS off build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
  --manifest-path "$ROOT/Cargo.toml" --target x86_64-unknown-linux-gnu \
  --target-dir "$WORK/target" -p envoy-harness --bin mock-upstream
context=$(mktemp -d)
cp "$WORK/target/x86_64-unknown-linux-gnu/release/mock-upstream" "$context/"
docker build --quiet -t "$MOCK_IMAGE" -f "$HERE/Dockerfile" "$context"
rm -rf "$context"
# The dev issuer's key (build/local-gateway/, created on first use) signs the suite's
# tokens; its JWKS goes into the cluster.
cargo run --quiet --manifest-path "$ROOT/Cargo.toml" -p envoy-harness --bin dev-token -- \
  --print-jwks >"$WORK/jwks.json"

# ---------------------------------------------------------------- 3. cluster and Istio
log "kind cluster $CLUSTER"
"$BIN/kind" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
CLUSTER_CREATED=1
"$BIN/kind" create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" \
  --config "$HERE/cluster.yaml" --wait 180s
"$BIN/kind" load docker-image "$MOCK_IMAGE" --name "$CLUSTER"
# The gateway and ratelimit pods spread over zones with DoNotSchedule, which skips nodes
# without a zone label: kind's have none. One zone for all.
kubectl label node --all --overwrite topology.kubernetes.io/zone=kind-a
# istio-cni: the gateway pods run without NET_ADMIN (istio/README.md prerequisites).
# JWKS_RESOLVER_INSECURE_SKIP_VERIFY: istiod fetches the RequestAuthentication's JWKS
# itself, from the dev issuer, whose dev-CA certificate its OS bundle cannot verify (the
# gateway's own fetch, for jwt-authz, is verified: overlay/).
istioctl install -y --set profile=minimal \
  --set components.cni.enabled=true \
  --set values.pilot.env.JWKS_RESOLVER_INSECURE_SKIP_VERIFY=true
kubectl -n istio-system rollout status deploy/istiod --timeout=180s

# ---------------------------------------------------------------- 4. dev CA, issuer
log "dev CA, gateway certificate, dev issuer"
pki=$WORK/pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=svc-gateway kind dev CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
issue() { # name, DNS name
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -extfile <(printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$2") \
    -out "$pki/$1.pem" 2>/dev/null
}
issue gateway api.exchange.example.com
issue issuer auth.exchange.example.com

kubectl create namespace gateway --dry-run=client -o yaml | kubectl apply -f -
# The Gateway's credentialName (istio/routing/gateway.yaml).
kubectl -n gateway create secret tls api-exchange-example-com-tls \
  --cert "$pki/gateway.pem" --key "$pki/gateway.key" --dry-run=client -o yaml | kubectl apply -f -
# The CA the gateway verifies the issuer with (overlay/).
kubectl -n gateway create secret generic dev-issuer-ca --from-file=ca.crt="$pki/ca.pem" \
  --dry-run=client -o yaml | kubectl apply -f -

proxy_image=$(grep -oE 'docker.io/istio/proxyv2:[^ ]+@sha256:[0-9a-f]{64}' \
  "$ROOT/istio/ingressgateway/deployment.yaml" | head -n1)
[[ -n $proxy_image ]]
sed "s|__PROXY_IMAGE__|$proxy_image|" "$HERE/dev-issuer.yaml" | kubectl apply -f -
kubectl -n svc-gateway-e2e create configmap dev-issuer-jwks --from-file=jwks.json="$WORK/jwks.json" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n svc-gateway-e2e create secret tls dev-issuer-tls \
  --cert "$pki/issuer.pem" --key "$pki/issuer.key" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n svc-gateway-e2e rollout status deploy/dev-issuer --timeout=120s
# auth.exchange.example.com resolves to the dev issuer inside the cluster (istiod, and the
# gateway's STRICT_DNS cluster of the jwks-issuer ServiceEntry).
kubectl -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' >"$WORK/Corefile"
if ! grep -q 'auth.exchange.example.com' "$WORK/Corefile"; then
  sed -i 's|^\(\s*\)ready$|\1ready\n\1rewrite name auth.exchange.example.com dev-issuer.svc-gateway-e2e.svc.cluster.local|' \
    "$WORK/Corefile"
  grep -q 'rewrite name auth.exchange.example.com' "$WORK/Corefile"
  kubectl -n kube-system create configmap coredns --from-file=Corefile="$WORK/Corefile" \
    --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n kube-system rollout restart deploy/coredns
  kubectl -n kube-system rollout status deploy/coredns --timeout=120s
fi

# ---------------------------------------------------------------- 5. the manifests
log "istio/ and envoyfilter-manifests/ (server-side apply)"
kubectl apply --server-side -k "$HERE/overlay"
kubectl apply --server-side -k "$ROOT/envoyfilter-manifests"

# ---------------------------------------------------------------- 6. mock upstreams
log "mock upstreams"
sed "s|__IMAGE__|$MOCK_IMAGE|" "$HERE/mocks.yaml" | kubectl apply -f -
for service in "${!MOCK_NAMESPACE[@]}"; do
  kubectl -n "${MOCK_NAMESPACE[$service]}" rollout status "deploy/$service" --timeout=180s
done
kubectl -n gateway rollout status deploy/ratelimit --timeout=300s
kubectl -n gateway rollout status deploy/istio-ingressgateway --timeout=300s

# ---------------------------------------------------------------- 7. the suite
log "port-forwards"
forward() { # namespace, target, ports...
  kubectl -n "$1" port-forward "$2" "${@:3}" >"$WORK/forward-${2//\//-}.log" 2>&1 &
  FORWARDS+=("$!")
}
forward gateway svc/istio-ingressgateway "$GATEWAY_HTTPS_LOCAL:443" "$GATEWAY_HTTP_LOCAL:80"
controls=()
for service in "${!MOCK_NAMESPACE[@]}"; do
  forward "${MOCK_NAMESPACE[$service]}" "deploy/$service" "${MOCK_CONTROL_LOCAL[$service]}:9090"
  controls+=("$service=127.0.0.1:${MOCK_CONTROL_LOCAL[$service]}")
done
for port in "$GATEWAY_HTTPS_LOCAL" "${MOCK_CONTROL_LOCAL[@]}"; do
  for _ in $(seq 60); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 1
  done
done
# The filters are configured once the EnvoyFilters reached the pods: wait for the gateway
# to answer the health route (routing/virtualservice-health.yaml) through the chain.
for _ in $(seq 60); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.pem" \
    --resolve "api.exchange.example.com:$GATEWAY_HTTPS_LOCAL:127.0.0.1" \
    "https://api.exchange.example.com:$GATEWAY_HTTPS_LOCAL/healthz" || true)
  [[ $code == 200 ]] && break
  sleep 2
done

log "end-to-end suite against the kind gateway"
GATEWAY_URL=https://127.0.0.1:$GATEWAY_HTTPS_LOCAL \
GATEWAY_HTTP_URL=http://127.0.0.1:$GATEWAY_HTTP_LOCAL \
GATEWAY_CA=$pki/ca.pem \
GATEWAY_TOKEN_ISSUER=https://auth.exchange.example.com \
GATEWAY_MOCK_CONTROL=$(IFS=,; echo "${controls[*]}") \
  cargo test --manifest-path "$ROOT/Cargo.toml" -p envoy-harness --test e2e -- --test-threads=1

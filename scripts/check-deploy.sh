#!/usr/bin/env bash
# Offline checks of the deployment artifacts in deploy/:
#
#   - Helm chart deploy/helm/ward: `helm lint --strict` and `helm template`
#     with the default values, with ci/full-values.yaml (hostNetwork, required
#     anti-affinity, existing Secrets, ...) and with a database URL; the
#     chart's own guards must refuse bad values.
#   - kubeconform -strict on every rendered manifest, against Kubernetes JSON
#     schemas made here (below); deliberately broken manifests must fail, so
#     this check cannot pass by validating nothing.
#   - every WARD_* variable set by the chart, the systemd env files and the
#     compose file is one that `ward core|proxy|gateway` reads.
#   - systemd units: systemd-analyze verify (skipped, and said so, without
#     systemd-analyze).
#   - compose file: compose-spec validation (schema, interpolation with
#     .env.example, consistency).
#
# Needs Go and the Go module proxy only (no GitHub, no Helm repository, no
# cluster, no root). Tools and schemas are built once and cached in
# ${WARD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ward-tools}.
#
# Kubernetes JSON schemas, offline: kubeconform normally downloads them from
# GitHub. Here they are generated from the OpenAPI document that the
# k8s.io/kubernetes Go module ships (api/openapi-spec/swagger.json):
#   cd "$(mktemp -d)" && go mod download -json k8s.io/kubernetes@v$K8S_VERSION   # "Dir": module root
#   go -C scripts/k8s-schemas run . -swagger <Dir>/api/openapi-spec/swagger.json \
#       -out <cache> -version v$K8S_VERSION
# which writes <cache>/v$K8S_VERSION-standalone[-strict]/<kind>[-<group>]-<version>.json,
# the layout kubeconform reads with
#   -schema-location '<cache>/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json'
# (No npm package was found that ships them, and `npm search` is not served here.)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT=$PWD

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
K8S_VERSION=1.34.2          # schemas from k8s.io/kubernetes@v$K8S_VERSION
COMPOSE_GO_VERSION=v2.16.2  # compose-spec validator: current schema
COMPOSE_GO_INTERP=v2.1.3    # its CLI interpolates ${VARS}; from v2.6.3 on it drops the environment
CHART=deploy/helm/ward

CACHE=${WARD_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ward-tools}
mkdir -p "$CACHE/bin"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
checks=0

step() { printf '\n== %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$*"; }
die() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
# Run a command with every HTTP(S) request going to a closed port: the
# validation steps must not touch the network.
offline() { HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= "$@"; }
# go commands run outside the main module (never touching its go.mod).
gocmd() { (cd "$WORK" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 go "$@"); }

# go_tool NAME PACKAGE VERSION: path of the cached binary, built on first use.
go_tool() {
  local name=$1 pkg=$2 version=$3 bin="$CACHE/bin/$1-$3"
  if [ ! -x "$bin" ]; then
    echo "building $pkg@$version (once; cached in $CACHE/bin)" >&2
    local gobin="$WORK/gobin-$name"
    mkdir -p "$gobin"
    GOBIN=$gobin gocmd install "$pkg@$version" >&2 || return 1
    mv "$gobin/$(basename "$pkg")" "$bin" || return 1
  fi
  echo "$bin"
}

step "tools"
command -v go >/dev/null || die "go is not installed"
HELM=$(go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION")
KUBECONFORM=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")
COMPOSE=$(go_tool compose-spec github.com/compose-spec/compose-go/v2/cmd "$COMPOSE_GO_VERSION")
COMPOSE_INTERP=$(go_tool compose-spec github.com/compose-spec/compose-go/v2/cmd "$COMPOSE_GO_INTERP")
ok "helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, compose-go $COMPOSE_GO_VERSION and $COMPOSE_GO_INTERP"

step "Kubernetes $K8S_VERSION JSON schemas"
# Keyed by the converter's source, so a change to it regenerates them.
conv_sum=$(cat scripts/k8s-schemas/go.mod scripts/k8s-schemas/main.go | sha256sum | cut -c1-12)
SCHEMAS="$CACHE/k8s-schemas/v$K8S_VERSION-$conv_sum"
if [ ! -f "$SCHEMAS/.complete" ]; then
  echo "generating from k8s.io/kubernetes@v$K8S_VERSION (once)"
  moddir=$(gocmd mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  swagger="$moddir/api/openapi-spec/swagger.json"
  [ -f "$swagger" ] || die "no $swagger in k8s.io/kubernetes@v$K8S_VERSION"
  rm -rf "$SCHEMAS"
  (cd scripts/k8s-schemas && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -o "$WORK/k8s-schemas" .)
  "$WORK/k8s-schemas" -swagger "$swagger" -out "$SCHEMAS" -version "v$K8S_VERSION"
  touch "$SCHEMAS/.complete"
fi
for f in deployment-apps-v1 statefulset-apps-v1 service-v1 secret-v1 persistentvolumeclaim-v1 \
  poddisruptionbudget-policy-v1 serviceaccount-v1; do
  [ -s "$SCHEMAS/v$K8S_VERSION-standalone-strict/$f.json" ] || die "schema $f missing in $SCHEMAS"
done
ok "schemas in $SCHEMAS ($(find "$SCHEMAS/v$K8S_VERSION-standalone-strict" -name '*.json' | wc -l) kinds)"
LOCATION="$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
kubeconform() {
  offline "$KUBECONFORM" -strict -summary -kubernetes-version "$K8S_VERSION" -schema-location "$LOCATION" "$@"
}

step "helm lint and template ($CHART)"
R="$WORK/rendered"
mkdir -p "$R"
HT=(offline "$HELM" template ward "$CHART" --namespace vpn --kube-version "$K8S_VERSION")
offline "$HELM" lint --strict "$CHART" --kube-version "$K8S_VERSION" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log"; die "helm lint (default values)"; }
ok "helm lint --strict, default values"
offline "$HELM" lint --strict "$CHART" --kube-version "$K8S_VERSION" -f "$CHART/ci/full-values.yaml" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log"; die "helm lint (ci/full-values.yaml)"; }
ok "helm lint --strict, ci/full-values.yaml"
"${HT[@]}" >"$R/default.yaml"
"${HT[@]}" -f "$CHART/ci/full-values.yaml" >"$R/full.yaml"
"${HT[@]}" --set core.database.url='postgres://ward:secret@db.example.com:5432/ward?sslmode=verify-full' \
  --set-json 'proxies=[{"name":"px1","joinToken":"t1"},{"name":"px2","persistence":{"enabled":false}}]' \
  --set-json 'gateways=[{"name":"gw1","location":"office"},{"name":"gw2","location":"office","service":{"type":"NodePort"}}]' \
  >"$R/postgres-url.yaml"
"${HT[@]}" --set core.enabled=false --set-json 'gateways=[{"name":"dmz-1","location":"dmz","masquerade":true,"privileged":true}]' \
  >"$R/gateways-only.yaml"
grep -q 'component: core' "$R/gateways-only.yaml" && die "core.enabled=false still renders core"
for f in "$R"/*.yaml; do
  n=$(grep -c '^kind: ' "$f" || true)
  [ "$n" -gt 0 ] || die "$(basename "$f") renders no resource"
  ok "helm template $(basename "$f" .yaml): $n resources"
done
# What the values promise is in the manifests.
grep -q 'replicas: 1$' "$R/default.yaml" || die "default values (SQLite) must run one core replica"
grep -q 'maxUnavailable: 0' "$R/full.yaml" && grep -q 'minAvailable: 1' "$R/full.yaml" || die "core rollout/PDB settings missing"
grep -q 'requiredDuringSchedulingIgnoredDuringExecution' "$R/full.yaml" || die "required anti-affinity missing"
grep -q 'hostNetwork: true' "$R/full.yaml" || die "hostNetwork missing"
grep -q 'name: pg-cluster-app' "$R/full.yaml" || die "existing database Secret not used"
grep -q 'publishNotReadyAddresses: true' "$R/full.yaml" || die "control Services must publish not-ready pods"
ok "rendered manifests carry the promised settings"
# NOTES.txt (shown by helm install) renders too: `helm template` skips it, so
# render it from a copy of the chart as a template of its own.
cp -r "$CHART" "$WORK/notes-chart"
cp "$CHART/templates/NOTES.txt" "$WORK/notes-chart/notes.txt"
printf 'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n' >"$WORK/notes-chart/templates/zz-notes.yaml"
for v in "" "$CHART/ci/full-values.yaml"; do
  offline "$HELM" template ward "$WORK/notes-chart" --kube-version "$K8S_VERSION" ${v:+-f "$v"} \
    --show-only templates/zz-notes.yaml >"$WORK/notes.yaml" || die "NOTES.txt does not render${v:+ with $v}"
  grep -q 'control addresses' "$WORK/notes.yaml" || die "NOTES.txt rendered empty"
done
ok "NOTES.txt renders"
# The chart's guards refuse bad values.
refuse() {
  local what=$1; shift
  if "${HT[@]}" "$@" >/dev/null 2>"$WORK/err"; then die "chart accepted $what"; fi
  grep -q 'execution error' "$WORK/err" || { cat "$WORK/err"; die "chart failed for another reason on $what"; }
  ok "chart refuses $what"
}
refuse "an invalid gateway name" --set-json 'gateways=[{"name":"Bad_Name"}]'
refuse "masquerade without privileged" --set-json 'gateways=[{"name":"gw1","masquerade":true}]'
refuse "two ports in one location" --set-json 'gateways=[{"name":"a","location":"x"},{"name":"b","location":"x","wireguardPort":51821}]'
refuse "a duplicate proxy name" --set-json 'proxies=[{"name":"a"},{"name":"a"}]'

step "kubeconform -strict (Kubernetes $K8S_VERSION)"
for f in "$R"/*.yaml; do
  out=$(kubeconform "$f" 2>&1) || { echo "$out"; die "kubeconform: $(basename "$f")"; }
  summary=$(echo "$out" | grep '^Summary:')
  n=$(echo "$summary" | sed -n 's/^Summary: \([0-9]*\) resource.*/\1/p')
  valid=$(echo "$summary" | sed -n 's/.*Valid: \([0-9]*\),.*/\1/p')
  [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$n" = "$valid" ] || { echo "$out"; die "kubeconform validated too little: $summary"; }
  ok "kubeconform $(basename "$f" .yaml): $summary"
done
# Negative checks: broken manifests must fail, with the reason named.
must_fail() {
  local what=$1 expect=$2 file=$3 out
  if out=$(kubeconform "$file" 2>&1); then echo "$out"; die "kubeconform accepted $what"; fi
  echo "$out" | grep -q -- "$expect" || { echo "$out"; die "kubeconform failed on $what without saying \"$expect\""; }
  ok "kubeconform rejects $what"
}
sed '0,/^  replicas: 1$/s//  replicas: "two"/' "$R/default.yaml" >"$WORK/bad-replicas.yaml"
grep -q 'replicas: "two"' "$WORK/bad-replicas.yaml" || die "could not break the manifest"
must_fail 'replicas: "two"' "/spec/replicas" "$WORK/bad-replicas.yaml"
sed '0,/^\( *\)imagePullPolicy: \(.*\)$/s//\1imagePullPolicy: \2\n\1imagePullPolice: Always/' "$R/default.yaml" >"$WORK/bad-field.yaml"
grep -q 'imagePullPolice' "$WORK/bad-field.yaml" || die "could not break the manifest"
must_fail "an unknown field (strict)" "imagePullPolice" "$WORK/bad-field.yaml"
printf 'apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: x\n' >"$WORK/bad-kind.yaml"
must_fail "a kind without schema" "could not find schema" "$WORK/bad-kind.yaml"

step "WARD_* variables exist in the code"
known=$(grep -ohE 'WARD_[A-Z_]+' internal/coreapp/config.go internal/proxy/config.go internal/gateway/config.go | sort -u)
{
  grep -ohE -- '- name: WARD_[A-Z_]+' "$R"/*.yaml | sed 's/- name: //'
  grep -ohE '^#?WARD_[A-Z_]+=' deploy/systemd/*.env.example | tr -d '#='
  grep -ohE '^ +WARD_[A-Z_]+:' deploy/compose/compose.yaml | tr -d ' :'
} | sort -u >"$WORK/used"
[ -s "$WORK/used" ] || die "found no WARD_* variables in the artifacts"
unknown=$(comm -23 "$WORK/used" <(echo "$known"))
[ -z "$unknown" ] || die "variables that ward does not read: $(echo $unknown)"
ok "$(wc -l <"$WORK/used") variables, all read by ward"

step "systemd units (deploy/systemd)"
if command -v systemd-analyze >/dev/null; then
  # A scratch root with the distribution's units and a stand-in binary, so
  # verify needs neither root nor an installed ward.
  S="$WORK/sysroot"
  mkdir -p "$S/etc/systemd/system" "$S/usr/local/bin" "$S/usr/lib/systemd"
  for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -d "$d" ]; then cp -r "$d" "$S/usr/lib/systemd/"; break; fi
  done
  printf '#!/bin/sh\n' >"$S/usr/local/bin/ward" && chmod +x "$S/usr/local/bin/ward"
  cp deploy/systemd/*.service "$S/etc/systemd/system/"
  units=(ward-core.service ward-proxy.service ward-gateway@office.service)
  out=$(cd "$S" && systemd-analyze verify --root="$S" "${units[@]}" 2>&1) || { echo "$out"; die "systemd-analyze verify"; }
  [ -z "$out" ] || { echo "$out"; die "systemd-analyze verify has remarks"; }
  ok "systemd-analyze verify: ${units[*]}"
  # Negative: an unknown directive is reported.
  sed -i 's/^NoNewPrivileges=yes$/&\nNoNewPrivilegez=yes/' "$S/etc/systemd/system/ward-core.service"
  out=$(cd "$S" && systemd-analyze verify --root="$S" ward-core.service 2>&1 || true)
  echo "$out" | grep -q NoNewPrivilegez || die "systemd-analyze verify did not read the unit"
  ok "systemd-analyze verify reports an unknown directive"
else
  echo "SKIP systemd-analyze not installed (Debian: apt-get install systemd)"
fi

step "compose (deploy/compose)"
C="$WORK/compose"
mkdir -p "$C"
cp deploy/compose/compose.yaml "$C/compose.yaml"
(cd "$C" && offline "$COMPOSE" -no-interpolation compose.yaml >/dev/null) || die "compose.yaml against the compose-spec schema ($COMPOSE_GO_VERSION)"
ok "compose-spec schema and consistency ($COMPOSE_GO_VERSION)"
(cd "$C" && set -a && . "$ROOT/deploy/compose/.env.example" && set +a && offline "$COMPOSE_INTERP" compose.yaml >"$C/resolved.yaml") ||
  die "compose.yaml with the variables of .env.example ($COMPOSE_GO_INTERP)"
grep -q 'published: "51820"' "$C/resolved.yaml" || die "compose: WireGuard port not published"
ok "compose.yaml resolves with .env.example ($COMPOSE_GO_INTERP)"
sed 's/^    cap_add: \[NET_ADMIN\]$/&\n    cap_ad: [NET_ADMIN]/' deploy/compose/compose.yaml >"$C/bad.yaml"
if (cd "$C" && offline "$COMPOSE" -no-interpolation bad.yaml >/dev/null 2>&1); then die "compose validator accepted an unknown key"; fi
ok "compose validator rejects an unknown key"
missing=""
for v in $(grep -oE '\$\{[A-Z_]+' deploy/compose/compose.yaml | tr -d '${' | sort -u); do
  grep -qE "^#?$v=" deploy/compose/.env.example || missing="$missing $v"
done
[ -z "$missing" ] || die "compose variables not in .env.example:$missing"
ok "every compose variable is in .env.example"

printf '\ncheck-deploy: %d checks passed in %ds\n' "$checks" "$((SECONDS - START))"

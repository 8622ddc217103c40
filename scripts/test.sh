#!/usr/bin/env bash
# The README's test command: installs what the tests need, checks formatting
# and vet and the deployment artifacts, then runs every test with the race detector on SQLite and on a
# throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
export WARD_REQUIRE_POSTGRES=1

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
# Deployment artifacts (Helm chart, systemd, compose): helm lint/template and
# kubeconform against Kubernetes schemas generated offline.
bash scripts/check-deploy.sh
go test -race -count=1 -timeout 45m ./... 2>&1 | tee /tmp/ward-test-$$.log
status=${PIPESTATUS[0]}
passed=$(grep -c '^ok ' /tmp/ward-test-$$.log || true)
failed=$(grep -c '^FAIL' /tmp/ward-test-$$.log || true)
rm -f /tmp/ward-test-$$.log
echo "packages: ${passed} passed, ${failed} failed"
exit "$status"

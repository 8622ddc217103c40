#!/usr/bin/env bash
# Installs the system packages ward's tests use, when they are missing:
# wireguard-tools (wg, wg-quick), nftables (nft, to inspect the gateway's rules), wireguard-go (wg-quick's userspace
# fallback without the kernel module), iputils-ping and iproute2 (ip, ss)
# for the network-namespace tests, keepalived (VRRP floating IP of the
# failover drill), oathtool for the TOTP interoperability test, chromium
# (headless browser of the web UI tests, driven by chromedp) and the
# PostgreSQL server binaries. Needs
# root for apt-get; without root it only reports what is missing.
set -euo pipefail

# Go tools the tests run as real peers (installed from the module proxy, no
# root needed): mailpit is the SMTP server for the e-mail tests.
gobin="$(go env GOPATH)/bin"
if ! command -v mailpit >/dev/null 2>&1 && [ ! -x "$gobin/mailpit" ]; then
  echo "install-deps: go install mailpit" >&2
  CGO_ENABLED=0 go install github.com/axllent/mailpit@v1.27.11
fi

need=()
command -v wg-quick >/dev/null 2>&1 || need+=(wireguard-tools)
command -v wireguard-go >/dev/null 2>&1 || need+=(wireguard-go)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
{ command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1; } || need+=(iproute2)
# oathtool: an independent TOTP implementation the MFA tests check codes with.
command -v oathtool >/dev/null 2>&1 || need+=(oathtool)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# keepalived: moves the floating IP between gateways in `ward drill`.
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
# chromium: the browser the web UI tests (e2e/web_test.go) drive headless;
# Debian installs it as /usr/bin/chromium.
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  need+=(chromium)
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${need[*]}; run as root (or install them) for the full test suite" >&2
  exit 0
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps Debian's postgresql and keepalived packages from starting
# a cluster or a daemon on the host.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

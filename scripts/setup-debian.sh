#!/usr/bin/env bash
# Install the Debian packages kuasar-py's demo and tests use, only those missing.
#   tmux      drives a real terminal for the interactive tests
#   socat     baseline relay for bench/exec_throughput.py
#   runc, busybox-static   real containers for the agent API tests
#   golang-go, golang-github-containerd-ttrpc-dev   the Go ttrpc interop peer (built by the tests)
#   containerd   its containerd-shim-runc-v2 is a real production ttrpc server
#   python3-venv   `make` creates .venv with it
#   qemu-system-x86   the vm tier boots a real guest kernel under TCG against our vhost-user-vsock device
set -euo pipefail
want=(tmux socat runc busybox-static golang-go golang-github-containerd-ttrpc-dev containerd python3-venv procps
      qemu-system-x86 iproute2)
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup-debian: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/bin/sh
# `make demo`: start a local sandbox (no VM needed), list it, run one command in it, and open an
# interactive shell when stdin is a terminal. The sandbox is stopped on every exit: success, a failing
# step, Ctrl-C, SIGTERM or SIGHUP.
#   BIN           where kuasarctl is installed (default: the checkout's .venv/bin)
#   SANDBOX_ROOT  the sandbox root (default /tmp/kuasar-demo)
#   DEMO_ID       the sandbox ID (default demo-pod-1)
set -eu

ctl="${BIN:-$(dirname "$0")/../.venv/bin}/kuasarctl"
root="${SANDBOX_ROOT:-/tmp/kuasar-demo}"
id="${DEMO_ID:-demo-pod-1}"

run() {
    echo "+ kuasarctl $*" >&2
    "$ctl" "$@"
}

cleanup() {
    status=$?
    trap - EXIT
    if "$ctl" sandbox stop -d "$root" "$id" >/dev/null 2>&1; then
        echo "demo: sandbox $id stopped" >&2
    fi
    exit "$status"
}

"$ctl" sandbox stop -d "$root" "$id" >/dev/null 2>&1 || true # a leftover from an earlier run
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

run sandbox run -d "$root" --name "$id"
run ps -d "$root"
run exec -t -d "$root" "$id" uname -a
if [ -t 0 ]; then
    # The shell's own exit status is the user's business, not a failed demo; kuasarctl failing is.
    shell_status=0
    run exec -it -d "$root" "$id" || shell_status=$?
    [ "$shell_status" -ne 125 ] || exit 125
else
    echo "stdin is not a terminal: skipping the interactive shell (run: $ctl exec -it -d $root $id)"
fi

#!/bin/sh
# A stand-in for the guest's Python in tests/vm: PID 1 that boots but never serves (the boot timeout
# and a forced stop are tested with it). It lives in the repository because the guest sees the host's
# root read-only over 9p, and /tmp there is the guest's own.
echo "never-answers: PID $$ up, serving nothing"
exec sleep 100000

"""The help, epilog and ``--examples`` texts of ``kuasarctl agent``.

Layer contract: ``kuasar.ctl`` only; plain strings. Every example is a command that works as
written (``tests/unit/test_agentctl_plan.py`` parses each one).
"""

from __future__ import annotations

DESCRIPTION = """Make any agent API call, with any parameters, on any guest: kuasar-agent, a Kuasar vmm-task,
a Kata agent, or any ttrpc server.

The target is a sandbox (ID, unique prefix or directory, found as exec finds it; -p picks the
agent's vsock port) or --server-address in every address form (with --hybrid-vsock, unix:///path
is a VMM's hybrid vsock socket, as kata-agent-ctl has it).

Each -c is one command: a method, then its arguments. Methods: grpc.Health, Kuasar's
grpc.SandboxService, Kata's grpc.AgentService, containerd.task.v2.Task,
containerd.services.streaming.v1.Streaming, kuasar.agent.v1.Agent (--list shows them all). A bare
method name is enough when it is unique among the services the guest serves. Arguments apply in
order: json://{...} and file:///path.json merge JSON into the request, then name=value sets one field
(dotted for nested fields and map keys, [a,b] for lists, typed by the descriptor, shell quoting).
IDs the request needs (container_id, exec_id, sandbox_id, id) are generated once per run and
reused, unless -n; cid= and sid= set them. Builtins: echo, sleep DURATION, repeat N, quit, help.
"""

EPILOG = """examples (kuasarctl agent --examples has more):
  kuasarctl agent pod-abc -c Check -c GetSystemInfo
  kuasarctl agent pod-abc -c 'ExecVMProcess command="uname -a"' --repeat 3 --json
  kuasarctl agent --server-address vsock://3:1024 -c 'GetGuestDetails json://{"mem_block_size": true}'
  kuasarctl agent --server-address unix:///run/vc/vm/ID/clh.sock --hybrid-vsock -c grpc.Health/Check
  kuasarctl agent --list grpc.AgentService

--json prints one object per call on stdout: method, code, status, message, elapsed_ms, request,
response (protobuf JSON), auto; logs go to stderr.

exit codes:
  0      every call succeeded
  1      a call was answered with a non-OK status (the rest are skipped unless --ignore-errors)
  2      bad flags, unknown method or field, bad value, malformed JSON, unreadable file: nothing sent
  124    a call ran out of time (--timeout)
  125    the guest could not be reached, or the connection failed
  130    interrupted (Ctrl-C)
"""

EXAMPLES = """Examples of kuasarctl agent (SANDBOX is an ID or a unique prefix; -d DIR picks the root)

- Is the agent up? What is it? (Check means grpc.Health/Check, or SandboxService/Check on vmm-task)

  $ kuasarctl agent pod-abc -c Check -c GetSystemInfo
  $ kuasarctl agent pod-abc -c grpc.Health/Version

- Run a command through a stock Kuasar vmm-task's ExecVMProcess, three times, as JSON lines:

  $ kuasarctl agent pod-abc -c 'ExecVMProcess command="uname -a"' --repeat 3 --json

- Reach a guest by address instead of a sandbox:

  # QEMU / StratoVirt (vhost-vsock): the guest's CID
  $ kuasarctl agent --server-address vsock://3:1024 -c GetGuestDetails

  # Cloud Hypervisor / Firecracker: the VMM's hybrid vsock socket, kata-agent-ctl style
  $ kuasarctl agent --server-address unix:///run/vc/vm/ID/clh.sock --hybrid-vsock -c grpc.Health/Check

  # the same in our own form
  $ kuasarctl agent --server-address hvsock:///run/kuasar-vmm/ID/task.vsock:1024 -c Check

  # an agent on a local (abstract) socket, as a Kata test setup runs it
  $ kuasarctl agent --server-address unix://@/tmp/foo.socket -c 'SyncClock Delta=0' --json

- Give the request as JSON, inline or from a file, then override single fields:

  $ kuasarctl agent pod-abc -c 'grpc.AgentService/GetGuestDetails json://{"mem_block_size": true}'
  $ echo '{"mem_block_size": true}' > /tmp/api.json
  $ kuasarctl agent pod-abc -c 'GetGuestDetails file:///tmp/api.json mem_hotplug_probe=false'

- Nested fields, lists and maps:

  $ kuasarctl agent pod-abc -c 'Exec 0.start.argv=[sh,-c,"echo hi; echo err >&2"]'
  $ kuasarctl agent pod-abc -c 'CreateContainer id=web bundle=/run/bundles/web labels.app=web'
  $ kuasarctl agent pod-abc -c 'ExecProcess cid=web exec_id=e1 process.Args=[ps,aux] process.Cwd=/'

- Send SIGUSR1 to a container process (signal by name or number; cid/sid as kata-agent-ctl has them):

  $ kuasarctl agent pod-abc -c 'SignalProcess signal=usr1 sid=SANDBOX_ID cid=CONTAINER_ID'

- Kata: a process (or a container) from an OCI bundle's config.json, as kata-agent-ctl's --bundle-dir:

  $ kuasarctl agent pod-abc --bundle-dir ./bundle -c 'ExecProcess cid=CONTAINER_ID exec_id=e1'

- Generated IDs are reused by the commands after them (-n: none are generated):

  $ kuasarctl agent pod-abc -c CreateSandbox -c StatsContainer -c DestroySandbox

- Builtins: repeat the next command, pause, print, stop:

  $ kuasarctl agent pod-abc -c 'repeat 5' -c GetMetrics -c 'sleep 1s' -c 'echo done' -c quit
  $ kuasarctl agent pod-abc --repeat -1 -c GetGuestDetails -c 'sleep 5s'      # until Ctrl-C

- Keep going after failures (the exit code still reports them):

  $ kuasarctl agent pod-abc --ignore-errors --repeat 7 -c CreateSandbox

- Long polls: no call deadline

  $ kuasarctl agent pod-abc --timeout 0 -c GetOOMEvent

- Interactively, with history and completion of methods and fields:

  $ kuasarctl agent -i pod-abc

- What can be called, with request fields and types:

  $ kuasarctl agent --list
  $ kuasarctl agent --list grpc.AgentService
  $ kuasarctl agent --list ExecProcess
  $ kuasarctl agent --list --json

- A service of your own (protoc --include_imports --descriptor_set_out=my.pb my.proto):

  $ kuasarctl agent --descriptor-set my.pb --server-address unix:///run/my.sock -c 'my.v1.Svc/Get id=1'
"""

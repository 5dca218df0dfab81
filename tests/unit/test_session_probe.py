"""The guest session's sans-IO cores: the probe's decisions, the diagnosis texts, ExecVMProcess's
command and failure parsing."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kuasar.errors import (
    REASON_DENIED,
    REASON_MISSING,
    REASON_NO_LISTENER,
    REASON_REFUSED,
    REASON_SILENT,
    DeadlineExceeded,
    RPCError,
    TransportError,
)
from kuasar.session import _diagnose
from kuasar.session._probe import INVALID_ARGUMENT, OK, UNIMPLEMENTED, Answer, ExecPath, GuestKind, GuestProbe
from kuasar.session._vm_process import parse_failure, unescape_debug, vm_process_command, vm_process_result

RUST_NO_HEALTH = Answer(INVALID_ARGUMENT, "grpc.Health service does not exist")


def run_probe(*answers: Answer) -> tuple[GuestKind | None, list[str]]:
    probe = GuestProbe()
    calls = []
    for answer in answers:
        call = probe.next_call()
        assert call is not None
        calls.append(f"{call.service}/{call.method}")
        probe.receive(answer)
    assert probe.next_call() is None
    return probe.kind, calls


def test_our_agent_answers_health_and_ping() -> None:
    kind, calls = run_probe(Answer(OK, serving=True), Answer(OK))
    assert kind is GuestKind.KUASAR_AGENT
    assert calls == ["grpc.Health/Check", "kuasar.agent.v1.Agent/Ping"]


@pytest.mark.parametrize(
    "refusal",
    [
        Answer(INVALID_ARGUMENT, "kuasar.agent.v1.Agent service does not exist"),  # Rust >= 0.7
        Answer(INVALID_ARGUMENT, "/kuasar.agent.v1.Agent/Ping does not exist"),  # Rust 0.5
        Answer(UNIMPLEMENTED, "service kuasar.agent.v1.Agent"),  # Go
    ],
)
def test_kata_serves_health_and_version_but_not_our_service(refusal: Answer) -> None:
    kind, calls = run_probe(Answer(OK, serving=True), refusal, Answer(OK))
    assert kind is GuestKind.KATA_AGENT
    assert calls[-1] == "grpc.Health/Version"


def test_vmm_task_has_no_health_but_a_sandbox_service() -> None:
    kind, calls = run_probe(RUST_NO_HEALTH, Answer(OK))
    assert kind is GuestKind.VMM_TASK
    assert calls == ["grpc.Health/Check", "grpc.SandboxService/Check"]


def test_other_ttrpc_servers_are_named_as_such() -> None:
    assert run_probe(RUST_NO_HEALTH, Answer(UNIMPLEMENTED, "Check method"))[0] is GuestKind.TTRPC
    assert run_probe(Answer(2, "boom"))[0] is GuestKind.TTRPC
    assert run_probe(Answer(OK, serving=False))[0] is GuestKind.TTRPC  # health NOT_SERVING
    kind, _ = run_probe(Answer(OK, serving=True), Answer(UNIMPLEMENTED), Answer(UNIMPLEMENTED))
    assert kind is GuestKind.TTRPC


def test_paths_per_kind() -> None:
    from kuasar.session._probe import exec_paths

    assert exec_paths(GuestKind.KUASAR_AGENT)[0] is ExecPath.API
    assert exec_paths(GuestKind.VMM_TASK) == (ExecPath.CONSOLE, ExecPath.VM_PROCESS)
    assert exec_paths(GuestKind.KATA_AGENT) == (ExecPath.CONSOLE,)
    assert exec_paths(GuestKind.NONE) == (ExecPath.CONSOLE,)


def error(reason: str) -> TransportError:
    return TransportError(f"transport said {reason}", reason=reason)


@pytest.mark.parametrize(
    ("reason", "words", "hint"),
    [
        (REASON_REFUSED, "does not accept connections", "sandbox stop"),
        (REASON_MISSING, "socket of pod is missing", "kuasarctl ps"),
        (REASON_DENIED, "permission denied", "root"),
        (REASON_SILENT, "never answers", "VMM process"),
        (REASON_NO_LISTENER, "nothing in the guest listens on vsock port 1024 or 1025", "booting"),
    ],
)
def test_each_unreachable_shape_has_its_message(reason: str, words: str, hint: str) -> None:
    exc = _diagnose.unreachable("pod", error(reason), error(reason), (1024, 1025))
    assert words in str(exc) and "\n" not in str(exc)
    assert any(hint in line for line in exc.hints), exc.hints


def test_add_task_debug_only_when_the_api_answered_and_the_console_is_closed() -> None:
    closed = error(REASON_NO_LISTENER)
    for kind in (GuestKind.VMM_TASK, GuestKind.KUASAR_AGENT):
        assert any("task.debug" in hint for hint in _diagnose.console_closed("pod", kind, 1025, closed).hints)
    refused = _diagnose.unreachable("pod", error(REASON_REFUSED), error(REASON_REFUSED), (1024, 1025))
    assert not any("task.debug" in hint for hint in refused.hints)
    kata = _diagnose.console_closed("pod", GuestKind.KATA_AGENT, 1025, closed)
    assert any("-p 1026" in hint for hint in kata.hints)
    assert not any("task.debug" in hint for hint in kata.hints)


def rust_debug(text: str) -> str:
    """Rust's ``{:?}`` of a str, written from its rules (escape_debug), for the tests."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\n\r\t\0":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}[char])
        elif not char.isprintable():
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@given(st.text(max_size=60), st.integers(0, 255))
def test_failure_message_gives_back_exit_code_and_stderr(stderr: str, code: int) -> None:
    command = vm_process_command(["sh", "-c", "echo failed with exit code 7 and error message x"])
    inner = f"Other: cmd {command} failed with exit code {code} and error message {stderr}"
    failure = parse_failure(f"Others({rust_debug(inner)})", command)
    assert failure is not None
    assert (failure.exit_code, failure.stderr) == (code, stderr.encode("utf-8", "replace"))


def test_other_errors_are_not_failures() -> None:
    assert parse_failure('Others("Other: spawn failed")') is None
    assert unescape_debug(r"a\"b\\c\u{1b}\n") == 'a"b\\c\x1b\n'


def test_command_runs_argv_exactly_under_bash_c() -> None:
    argv = ["printf", "%s|", "a b", "it's", "\x15\t\x7f", "é"]
    command = vm_process_command(argv, env={"A": "1"}, cwd="/")
    assert command.isascii() and command.isprintable()
    out = subprocess.run(["bash", "-c", command], capture_output=True, check=True)
    assert out.stdout == "a b|it's|\x15\t\x7f|é|".encode()


def test_ping_may_go_with_the_first_check_only() -> None:
    probe = GuestProbe()
    assert probe.ahead() is not None and probe.ahead() != probe.next_call()
    guess = probe.ahead()
    probe.receive(Answer(OK, serving=True))
    assert probe.next_call() == guess and probe.ahead() is None  # the guess was right
    other = GuestProbe()
    other.receive(RUST_NO_HEALTH)
    assert other.next_call() != guess and other.ahead() is None  # a vmm-task: its answer is dropped


def test_a_guest_enforced_deadline_is_the_callers_timeout() -> None:
    """vmm-task got the timeout as timeout_nano: its DEADLINE_EXCEEDED is the caller's --timeout."""
    expired = RPCError(4, "timeout")
    with pytest.raises(DeadlineExceeded, match=r"timed out after 1 s"):
        vm_process_result(["sleep", "30"], "sleep 30", error=expired, timeout=1.0)
    with pytest.raises(RPCError):  # no timeout of ours: the guest's own limit, as it said it
        vm_process_result(["sleep", "30"], "sleep 30", error=expired)

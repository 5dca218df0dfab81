"""The stand-ins' debug consoles behave as vmm-task's (KSR_MODE sniff) and Kata's (a plain shell) do."""

from __future__ import annotations

import socket
import time

from tests.functional.guests import ConsoleSession, Guest, kata_guest, vmm_task_console_guest
from tests.functional.guests_raw import hvsock, read_to_eof, read_until, wait_for

__all__ = ["kata_guest", "vmm_task_console_guest"]

# Prints CT-Y0 when the shell's session has a controlling terminal (the echoed line has no "CT-Y0").
CTTY_PROBE = b"(exec 3</dev/tty) 2>/dev/null && echo CT-Y$((0)) || echo CT-N$((0))\n"


def closed_session(guest: Guest, since: int) -> ConsoleSession:
    wait_for(lambda: guest.consoles(since))
    (session,) = guest.consoles(since)
    return session


def test_vmm_task_exec_mode(vmm_task_console_guest: Guest) -> None:
    guest = vmm_task_console_guest
    mark = guest.mark()
    with hvsock(guest.socket, 1025) as sock:
        sock.sendall(b'KSR_MODE exec\necho "[$PS1]" $((6*7))\n')
        out = read_until(sock, b"42")
        assert b"[] 42" in out  # PS1 is empty
        assert b"echo" not in out  # and ECHO is off: the typed line is not sent back
        sock.sendall(CTTY_PROBE + b"exit 3\n")
        rest = read_to_eof(sock)  # the shell exits: the console drops the connection
        # vmm-task does setsid() without TIOCSCTTY, yet bash takes the pty as its controlling
        # terminal itself (check_dev_tty() opens ttyname(0) as a session leader), there as here.
        assert b"CT-Y0" in rest
    session = closed_session(guest, mark)
    assert session.exec_mode and session.port == 1025
    assert session.received == b'echo "[$PS1]" $((6*7))\n' + CTTY_PROBE + b"exit 3\n"
    assert (session.ended, session.shell_exit) == ("shell", 3)


def test_vmm_task_header_split_and_crlf(vmm_task_console_guest: Guest) -> None:
    guest = vmm_task_console_guest
    mark = guest.mark()
    with hvsock(guest.socket, 1025) as sock:
        sock.sendall(b"KSR_")
        time.sleep(0.02)
        sock.sendall(b"MODE exec\r\necho A$((1+1))\n")
        out = read_until(sock, b"A2")
        assert b"A2" in out and b"echo" not in out
        sock.sendall(b"exit\n")
        read_to_eof(sock)
    assert closed_session(guest, mark).exec_mode


def test_vmm_task_late_header_is_shell_input(vmm_task_console_guest: Guest) -> None:
    guest = vmm_task_console_guest
    mark = guest.mark()
    with hvsock(guest.socket, 1025) as sock:
        time.sleep(0.3)  # past the 100 ms the console waits for a mode header
        sock.sendall(b"KSR_MODE exec\n")
        out = read_until(sock, b"command not found")
        assert b"KSR_MODE" in out and b"command not found" in out
        sock.sendall(b'echo "[$PS1]"\nexit\n')
        rest = read_to_eof(sock)
        assert b"[]" not in rest  # plain mode: bash keeps a prompt
    session = closed_session(guest, mark)
    assert not session.exec_mode and session.received.startswith(b"KSR_MODE exec\n")


def test_vmm_task_plain_mode_echoes(vmm_task_console_guest: Guest) -> None:
    guest = vmm_task_console_guest
    with hvsock(guest.socket, 1025) as sock:
        sock.sendall(b"echo X$((2+3))Y\n")
        out = read_until(sock, b"X5Y")
        assert b"echo X$((2+3))Y" in out and b"X5Y" in out  # no header: ECHO stays on
        sock.sendall(b"exit\n")
        read_to_eof(sock)


def test_vmm_task_host_eof_kills_the_shell(vmm_task_console_guest: Guest) -> None:
    guest = vmm_task_console_guest
    mark = guest.mark()
    with hvsock(guest.socket, 1025) as sock:
        sock.sendall(b"KSR_MODE exec\nsleep 100\n")
        time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)  # a half-close ends the console, output or not
        started = time.monotonic()
        read_to_eof(sock, timeout=5)
        assert time.monotonic() - started < 5
    session = closed_session(guest, mark)
    assert (session.ended, session.shell_exit) == ("host", -9)


def test_kata_console_is_a_plain_shell(kata_guest: Guest) -> None:
    assert kata_guest.console_port == 1026
    mark = kata_guest.mark()
    with hvsock(kata_guest.socket, 1026) as sock:
        sock.sendall(b"KSR_MODE exec\n")
        out = read_until(sock, b"command not found")
        assert out.count(b"KSR_MODE exec") >= 1 and b"command not found" in out  # echoed, then run
        sock.sendall(b"echo $((6*7))\n" + CTTY_PROBE)
        out = read_until(sock, b"CT-Y0")
        assert b"echo $((6*7))" in out and b"\r42\r\n" in out  # ECHO on, ONLCR on
        assert b"CT-Y0" in out  # TIOCSCTTY: a controlling terminal
        sock.sendall(b"exit 5\n")
        read_to_eof(sock)
    session = closed_session(kata_guest, mark)
    assert session.port == 1026 and not session.exec_mode
    assert session.received.startswith(b"KSR_MODE exec\necho $((6*7))\n")
    assert (session.ended, session.shell_exit) == ("shell", 5)  # reaped, not killed


def test_kata_console_sessions_run_side_by_side(kata_guest: Guest) -> None:
    with hvsock(kata_guest.socket, 1026) as first, hvsock(kata_guest.socket, 1026) as second:
        first.sendall(b"echo one-$((1))\n")
        second.sendall(b"echo two-$((2))\n")
        assert b"two-2" in read_until(second, b"two-2")
        assert b"one-1" in read_until(first, b"one-1")
        for sock in (first, second):
            sock.sendall(b"exit\n")
            read_to_eof(sock)


def test_kata_host_eof_kills_the_shell(kata_guest: Guest) -> None:
    mark = kata_guest.mark()
    with hvsock(kata_guest.socket, 1026) as sock:
        sock.sendall(b"sleep 100\n")
        read_until(sock, b"sleep 100")
        sock.shutdown(socket.SHUT_WR)
        read_to_eof(sock, timeout=5)
    session = closed_session(kata_guest, mark)
    assert (session.ended, session.shell_exit) == ("host", -9)

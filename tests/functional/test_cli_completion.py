"""Shell completion: the real ``kuasarctl`` answering argcomplete's protocol, and the shell snippets.

argcomplete's protocol (what the snippet's shell function does): run the program with
``_ARGCOMPLETE=1`` (the program name is word 1 of the line), ``COMP_LINE`` (the line typed so far)
and ``COMP_POINT`` (the cursor offset); it writes the candidates, separated by ``$_ARGCOMPLETE_IFS``
(default ``\\v``), to fd 8 — or to ``$_ARGCOMPLETE_STDOUT_FILENAME`` — and exits 0. Sandbox roots
are fake: discovery only needs a directory holding ``task.socket`` (or ``task.vsock``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.cli_helpers import DUMP_MODULES, KUASARCTL, kuasarctl

IFS = "\v"


def complete(
    line: str,
    *,
    env: dict[str, str] | None = None,
    via_file: Path | None = None,
    cwd: Path | None = None,
) -> list[str]:
    """The candidates ``kuasarctl`` offers with the cursor at the end of ``line``."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("_ARC", "COMP_"))}
    environ.pop("KUASAR_SOCKET_DIR", None)
    environ.update(
        _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line.encode())), _ARGCOMPLETE_SHELL="bash"
    )
    environ.update(env or {})
    if via_file is not None:
        environ["_ARGCOMPLETE_STDOUT_FILENAME"] = str(via_file)
        result = subprocess.run(KUASARCTL, env=environ, cwd=cwd, capture_output=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        return _words(via_file.read_text())
    # as the snippet runs it: the answer on fd 8, the program's own stdout thrown away
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" 8>&1 1>/dev/null', "sh", *KUASARCTL],
        env=environ,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return _words(result.stdout.decode())


def _words(text: str) -> list[str]:
    return [word.rstrip(" ") for word in text.split(IFS) if word]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A sandbox root with three sandboxes (both socket layouts) and two things that are not."""
    base = tmp_path / "root"
    for sandbox_id, name in (("pod-abc", "task.socket"), ("pod-abd", "task.vsock"), ("other", "task.socket")):
        (base / sandbox_id).mkdir(parents=True)
        (base / sandbox_id / name).touch()
    (base / "pod-empty").mkdir()  # no socket: not a sandbox
    (base / "pod-file").touch()  # not a directory
    return base


def test_subcommands_complete(tmp_path: Path) -> None:
    offered = complete("kuasarctl ", cwd=tmp_path)
    assert {"exec", "ps", "info", "logs", "cp", "containers", "sandbox", "completion"} <= set(offered)
    assert complete("kuasarctl e", cwd=tmp_path) == ["exec"]
    offered = complete("kuasarctl co", cwd=tmp_path)
    assert {"containers", "container", "completion"} <= set(offered)
    assert all(word.startswith("co") for word in offered)
    assert {"run", "stop"} <= set(complete("kuasarctl sandbox ", cwd=tmp_path))


def test_flags_complete(tmp_path: Path) -> None:
    assert set(complete("kuasarctl exec --con", cwd=tmp_path)) == {
        "--console",
        "--container",
        "--connect-timeout",
    }
    assert {"-d", "--socket-dir", "--probe-timeout", "-o", "--output"} <= set(
        complete("kuasarctl ps -", cwd=tmp_path)
    )
    assert complete("kuasarctl ps -o ", cwd=tmp_path) == ["table", "json"]
    assert complete("kuasarctl completion ", cwd=tmp_path) == [
        "-h",
        "--help",
        "-v",
        "--verbose",
        "bash",
        "zsh",
    ]


def test_sandbox_ids_complete_from_the_root_given(root: Path, tmp_path: Path) -> None:
    d = shlex.quote(str(root))
    offered = complete(f"kuasarctl info -d {d} ", cwd=tmp_path)  # the flags, then every ID
    assert [word for word in offered if not word.startswith("-")] == ["other", "pod-abc", "pod-abd"]
    assert "--output" in offered
    assert complete(f"kuasarctl exec -d {d} pod-ab", cwd=tmp_path) == ["pod-abc", "pod-abd"]
    assert complete(f"kuasarctl exec -it --socket-dir={d} o", cwd=tmp_path) == ["other"]
    assert complete(f"kuasarctl logs -d {d} pod-abd", cwd=tmp_path) == ["pod-abd"]
    assert complete(f"kuasarctl containers -d {d} x", cwd=tmp_path) == []
    assert complete(f"kuasarctl container start -d {d} p", cwd=tmp_path) == ["pod-abc", "pod-abd"]
    # several IDs: those already on the line are not offered again
    assert complete(f"kuasarctl sandbox stop -d {d} pod-abc p", cwd=tmp_path) == ["pod-abd"]


def test_sandbox_ids_are_live(root: Path, tmp_path: Path) -> None:
    line = f"kuasarctl exec -d {shlex.quote(str(root))} pod-"
    assert complete(line, cwd=tmp_path) == ["pod-abc", "pod-abd"]
    (root / "pod-new").mkdir()
    (root / "pod-new" / "task.socket").touch()
    shutil.rmtree(root / "pod-abc")
    assert complete(line, cwd=tmp_path) == ["pod-abd", "pod-new"]


def test_sandbox_ids_from_the_environment_root(root: Path, tmp_path: Path) -> None:
    env = {"KUASAR_SOCKET_DIR": str(root)}
    assert complete("kuasarctl info pod-", env=env, cwd=tmp_path) == ["pod-abc", "pod-abd"]
    # the other protocol variant: the answer in a file instead of fd 8
    answer = tmp_path / "answer"
    assert complete("kuasarctl exec o", env=env, via_file=answer, cwd=tmp_path) == ["other"]


def test_sandbox_ids_complete_nothing_on_a_bad_root(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    a_file = tmp_path / "a-file"
    a_file.touch()
    assert complete(f"kuasarctl exec -d {missing} p", cwd=tmp_path) == []
    assert complete(f"kuasarctl exec -d {a_file} p", cwd=tmp_path) == []
    assert complete("kuasarctl info p", env={"KUASAR_SOCKET_DIR": str(missing)}, cwd=tmp_path) == []


def test_sandbox_ids_do_not_touch_the_guest(tmp_path: Path) -> None:
    """Completion reads directories only: a listening socket in the sandbox gets no connection."""
    root = Path(tempfile_short())
    try:
        (root / "pod-live").mkdir()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(root / "pod-live" / "task.socket"))
            listener.listen(8)
            listener.setblocking(False)
            assert complete(f"kuasarctl exec -d {root} pod-", cwd=tmp_path) == ["pod-live"]
            with pytest.raises(BlockingIOError):
                listener.accept()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tempfile_short() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="ksrc", dir="/tmp")  # UNIX socket paths are limited to 107 bytes


def test_sandbox_operand_offers_ids_not_local_files(root: Path) -> None:
    """argcomplete's default completer (local file names) does not answer for a SANDBOX operand."""
    (root / "pod-abx").touch()  # in the working directory, like pod-abc/ and pod-abd/
    assert complete(f"kuasarctl exec -d {root} pod-ab", cwd=root) == ["pod-abc", "pod-abd"]


def test_completion_bash_sources_and_registers() -> None:
    script = f"source <({shlex.join(KUASARCTL)} completion bash) && complete -p kuasarctl"
    result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout.decode().split()[-3:] == ["-F", "_python_argcomplete", "kuasarctl"]


def test_bash_completion_end_to_end(root: Path, tmp_path: Path) -> None:
    """The snippet's own shell function runs kuasarctl from $PATH and fills COMPREPLY."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "kuasarctl"
    program.write_text(f'#!/bin/sh\nexec {shlex.join(KUASARCTL)} "$@"\n')
    program.chmod(0o755)
    line = f"kuasarctl exec -d {root} pod-ab"
    script = (
        "source <(kuasarctl completion bash) || exit 9\n"
        f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9\n"
        "_python_argcomplete kuasarctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("KUASAR_SOCKET_DIR", None)
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["pod-abc", "pod-abd"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_completion_zsh_registers_with_compinit(tmp_path: Path) -> None:
    script = (
        f"autoload -U compinit && compinit -u -d {tmp_path}/zcompdump && "
        f"source <({shlex.join(KUASARCTL)} completion zsh) && print -r -- ${{_comps[kuasarctl]}}"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        ["zsh", "-f", "-c", script], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "_python_argcomplete"


def test_zsh_protocol_gives_ids(root: Path, tmp_path: Path) -> None:
    offered = complete(f"kuasarctl exec -d {root} pod-ab", env={"_ARGCOMPLETE_SHELL": "zsh"}, cwd=tmp_path)
    assert [word.split(":", 1)[0] for word in offered] == ["pod-abc", "pod-abd"]


def test_completion_rejects_other_shells() -> None:
    result = kuasarctl("completion", "fish")
    assert result.returncode == 2
    assert b"invalid choice: 'fish'" in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["ps", "-d", "ROOT"], ["exec", "--help"]])
def test_argcomplete_is_not_loaded_outside_completion(argv: list[str], root: Path, tmp_path: Path) -> None:
    dump = tmp_path / "modules.txt"
    args = [str(root) if arg == "ROOT" else arg for arg in argv]
    env = {key: value for key, value in os.environ.items() if key != "_ARGCOMPLETE"}
    result = subprocess.run(
        [sys.executable, "-c", DUMP_MODULES, str(dump), *args],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(dump.read_text().split())
    assert "kuasar.ctl.main" in loaded  # it ran
    assert not {name for name in loaded if name == "argcomplete" or name.startswith("argcomplete.")}

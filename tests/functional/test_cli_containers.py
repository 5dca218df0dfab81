"""``kuasarctl containers`` and ``kuasarctl container create|start|stop|rm`` against a local sandbox."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.functional.bundle import container_sandbox, make_bundle
from tests.functional.cli_helpers import LocalSandbox, kuasarctl


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with container_sandbox("pod-cli-ctr") as sandbox:
        yield sandbox


def ctl(sandbox: LocalSandbox, *args: str) -> tuple[int, str, str]:
    del sandbox
    result = kuasarctl(*args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def container(sandbox: LocalSandbox, action: str, *rest: str) -> tuple[int, str, str]:
    return ctl(sandbox, "container", action, "-d", sandbox.root, sandbox.id, *rest)


def listing(sandbox: LocalSandbox, *flags: str) -> list[dict[str, object]]:
    code, out, err = ctl(sandbox, "containers", "-d", sandbox.root, "-o", "json", *flags, sandbox.id)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_create_start_list_stop_rm(sandbox: LocalSandbox, tmp_path: object) -> None:
    bundle = make_bundle(os.path.join(str(tmp_path), "b"), ["sleep", "300"])
    assert container(sandbox, "create", "--label", "app=web", "web", bundle) == (0, "web\n", "")
    assert [(r["id"], r["status"], r["labels"]) for r in listing(sandbox)] == [
        ("web", "created", {"app": "web"})
    ]
    assert container(sandbox, "start", "web") == (0, "web\n", "")
    code, table, _ = ctl(sandbox, "containers", "-d", sandbox.root, sandbox.id)
    assert code == 0
    header, row = table.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PID"]
    assert row.startswith("web ") and "running" in row and bundle in row

    code, out, err = container(
        sandbox, "stop", "-t", "1", "web"
    )  # sleep as PID 1 ignores TERM: KILL after 1 s
    assert (code, out) == (0, "web\n"), err
    assert listing(sandbox) == []
    stopped = listing(sandbox, "-a")
    assert [(r["id"], r["status"]) for r in stopped] == [("web", "stopped")]
    assert stopped[0]["exit"] == {"exit_code": 0, "signal": 9, "core_dumped": False}
    assert container(sandbox, "rm", "web") == (0, "web\n", "")
    assert listing(sandbox, "-a") == []


def test_bad_input_is_one_clear_line_and_exit_125(sandbox: LocalSandbox, tmp_path: object) -> None:
    code, out, err = container(sandbox, "start", "ghost")
    assert (code, out) == (125, "") and err.startswith("Error: the agent refused: ") and "ghost" in err
    assert "Traceback" not in err and "NOT_FOUND" not in err  # plain words, no gRPC code names

    bundle = make_bundle(os.path.join(str(tmp_path), "b"), ["sleep", "300"])
    assert container(sandbox, "create", "--start", "dup", bundle)[0] == 0
    code, _, err = container(sandbox, "create", "dup", bundle)
    assert code == 125 and "the agent refused" in err and "exists" in err and "ALREADY_EXISTS" not in err
    code, _, err = container(sandbox, "rm", "dup")
    assert code == 125 and "the agent refused" in err and "force" in err
    assert container(sandbox, "stop", "-s", "KILL", "dup")[0] == 0
    code, _, err = container(sandbox, "stop", "dup")
    assert code == 125 and "the agent refused" in err and "FAILED_PRECONDITION" not in err
    assert container(sandbox, "rm", "dup")[0] == 0

    code, _, err = container(sandbox, "create", "bad", os.path.join(str(tmp_path), "nowhere"))
    assert code == 125 and "the agent refused" in err and "INVALID_ARGUMENT" not in err
    code, _, err = container(sandbox, "stop", "-s", "NOPE", "x")
    assert code == 2 and "unknown signal" in err


def test_rm_force_kills_a_running_container(sandbox: LocalSandbox, tmp_path: object) -> None:
    bundle = make_bundle(os.path.join(str(tmp_path), "b"), ["sleep", "300"])
    assert container(sandbox, "create", "--start", "forced", bundle)[0] == 0
    assert container(sandbox, "rm", "-f", "forced") == (0, "forced\n", "")
    assert listing(sandbox, "-a") == []


def test_exec_of_a_command_the_container_lacks_is_127_in_one_line(
    sandbox: LocalSandbox, tmp_path: object
) -> None:
    bundle = make_bundle(os.path.join(str(tmp_path), "b"), ["sleep", "300"])
    assert container(sandbox, "create", "--start", "xweb", bundle)[0] == 0
    try:
        base = ["exec", "--container", "xweb", "-d", sandbox.root, sandbox.id]
        code, out, err = ctl(sandbox, *base, "bash")  # busybox has no bash
        assert (code, out) == (127, ""), err
        assert (
            err.strip().splitlines() == [err.strip()] and "bash: command not found in container xweb" in err
        )
        code, out, err = ctl(sandbox, *base, "/etc/passwd")
        assert (code, out) == (126, ""), err
        assert len(err.strip().splitlines()) == 1 and "not executable in container xweb" in err
        assert ctl(sandbox, *base, "sh", "-c", "echo hi; exit 7")[:2] == (7, "hi\n")
    finally:
        container(sandbox, "rm", "-f", "xweb")

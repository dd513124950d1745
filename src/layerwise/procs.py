"""Child processes that never outlive the command that started them (no heavy imports here).

`die_with_parent` is the initializer of every worker pool: it runs first thing in a worker, before
torch is imported, so the window in which a killed parent could leave a worker behind is the
interpreter's start-up alone — and the `getppid` check closes even that one.
"""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent(parent_pid: int) -> None:
    """The kernel kills this process when its parent dies (even by SIGKILL): a killed sweep
    leaves no worker behind to finish a run and write into its directory afterwards."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

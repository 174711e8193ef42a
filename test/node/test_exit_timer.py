"""The C library's exit timer: it ends a process whose main thread holds the GIL in C."""
from __future__ import annotations

import subprocess
import sys

from ..conftest import REPO


def test_the_timer_ends_a_process_stuck_in_c_with_the_given_status():
    """A C call that holds the GIL for ten minutes (ctypes.PyDLL does not release it) stops no
    timer of the C library's: the process ends with the armed status, and nothing was printed."""
    code = ("import ctypes, sys\nfrom tagclip_ros.node import exit_timer\n"
            "if not exit_timer.arm(0.2, 7):\n    sys.exit('not armed')\n"
            "ctypes.PyDLL(None).sleep(600)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (7, "", "")

"""A timer that ends the process without running any Python: the last guard of Ctrl-C's deadline.

After Ctrl-C the executables clean up (destroy the node, and with it the DDS participant) under
a deadline (`commands.exit_within_deadline`). A Python timer thread cannot keep it when the
clean-up hangs inside a C call that holds the GIL, which Fast DDS 3.2.3 does now and then: its
TCP transport (`FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`, as run.sh sets) can deadlock in
`TCPChannelResourceBasic::disconnect` while rclpy's `destroy_node` holds the GIL (fixed upstream
by eProsima/Fast-DDS#6066, not in the wheels). The feeder was seen stuck there for good after a
Ctrl-C.

So this module asks the C library for a POSIX timer (`timer_create`, SIGEV_THREAD) whose
expiry calls `_exit(status)` on a thread of the C library's own: no interpreter, no GIL. Linux
(glibc or musl) only; elsewhere `arm` returns False and the Python timer is all there is.
"""
from __future__ import annotations

import ctypes
import ctypes.util

CLOCK_MONOTONIC = 1
SIGEV_THREAD = 2


class _Sigevent(ctypes.Structure):
    """struct sigevent (64 bytes on Linux): sigev_value first, then signo, notify, and the
    SIGEV_THREAD function and attributes."""

    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("sigev_notify_function", ctypes.c_void_p),
                ("sigev_notify_attributes", ctypes.c_void_p), ("_pad", ctypes.c_byte * 32)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def arm(seconds: float, status: int) -> bool:
    """End the process with `status` in `seconds`, whatever the interpreter is doing then (no
    output is flushed: the Python timer before it does that). Returns whether the timer is set;
    it cannot be cancelled (it is armed only once the process is on its way out)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timer_create = getattr(libc, "timer_create", None)
        timer_settime = getattr(libc, "timer_settime", None)
        if timer_create is None:  # glibc before 2.34 keeps the timers in librt
            librt = ctypes.CDLL(ctypes.util.find_library("rt"), use_errno=True)
            timer_create, timer_settime = librt.timer_create, librt.timer_settime
        # _exit(int) is called with the sigval union, passed as its first argument would be
        event = _Sigevent(sigev_value=status, sigev_notify=SIGEV_THREAD,
                          sigev_notify_function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
        timer = ctypes.c_void_p()
        if timer_create(CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)) != 0:
            return False
        whole = int(seconds)
        expiry = _Itimerspec(it_value=_Timespec(whole, int((seconds - whole) * 1e9)))
        return timer_settime(timer, 0, ctypes.byref(expiry), None) == 0
    except (OSError, AttributeError, TypeError):  # no such C library or function here
        return False

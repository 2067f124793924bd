"""Thread priorities: the event loop's thread keeps the process's niceness, and every thread that
computes (the batchers' workers and ONNX Runtime's pools, image decoding, large JSON) runs
COMPUTE_NICE steps nicer, so that on a saturated CPU the loop (I/O, /healthz) is scheduled first.
Linux applies niceness per thread; elsewhere this does nothing."""

from __future__ import annotations

import os
import threading

COMPUTE_NICE = 5


def lower_current_thread(nice: int = COMPUTE_NICE) -> None:
    """Make this thread (and the threads it starts from now on) `nice` steps nicer than the main
    thread. Idempotent; best effort."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError:
        pass

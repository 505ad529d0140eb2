"""Ending what rayline started, by PID (no cluster needed)."""

import subprocess
import sys
import time

import psutil

from rayline.runtime import stop_processes

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def test_sigterm_first_then_sigkill_for_what_ignores_it():
    polite = psutil.Process(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid)
    t0 = time.time()
    stop_processes([polite, polite], grace_s=5.0)                    # a duplicate is harmless
    assert time.time() - t0 < 2 and not polite.is_running()           # SIGTERM was enough: no wait

    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"             # its SIGTERM handler is in place
    proc = psutil.Process(stubborn.pid)
    t0 = time.time()
    stop_processes([proc], grace_s=1.0)
    assert 1.0 <= time.time() - t0 < 5
    assert stubborn.wait(timeout=5) == -9                             # SIGKILL after the grace period


def test_processes_already_gone_are_skipped():
    gone = psutil.Process(subprocess.Popen([sys.executable, "-c", "pass"]).pid)
    psutil.wait_procs([gone], timeout=10)
    stop_processes([gone], grace_s=1.0)                              # no error

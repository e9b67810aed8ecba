# children.py - the processes the benchmark harness starts: spawned with a log each, stopped
# (SIGTERM, then SIGKILL) however the run ends, and their peak resident memory sampled.

import os
import signal
import subprocess
import threading
import time

from common import log


# How often the peak RSS of every running child is read.
RSS_SAMPLE_SECONDS = 0.02
SERVICE_STOP_SECONDS = 40


def peak_rss_kib(pid):
    """VmHWM of a running process: the peak of its resident set, in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Children:
    """Every process the harness started, so that each is stopped however the run ends, and the
    peak RSS of each.

    The peak comes from /proc/PID/status (VmHWM), sampled while the process runs, not from
    wait4's ru_maxrss: Linux carries ru_maxrss across exec, so a child would report at least
    this harness's own memory at the moment it was spawned.
    """

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.live = {}
        self.peaks = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _sample_rss(self):
        while True:
            with self.lock:
                pids = list(self.live)
            for pid in pids:
                peak = peak_rss_kib(pid)
                with self.lock:
                    if pid in self.live:
                        self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
            time.sleep(RSS_SAMPLE_SECONDS)

    def spawn(self, name, command, stdin=None, stdout=subprocess.DEVNULL, env=None):
        """Starts `command` with stderr to its log; stdout="log" sends stdout there too (the
        Spring peer logs to stdout)."""
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log_file = open(log_path, "ab")
        if isinstance(stdout, str) and stdout == "log":
            stdout = log_file
        full_env = dict(os.environ)
        full_env.update(env or {})
        process = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=log_file, env=full_env)
        log_file.close()
        process.bench_name = name
        process.bench_log = log_path
        process.bench_started = time.monotonic()
        with self.lock:
            self.live[process.pid] = process
        return process

    def reap(self, process, block=True):
        """Waits for the process; returns (exit code, peak RSS in KiB), or None if still running."""
        if not block:
            # Sample once more while the process can still be read.
            peak = peak_rss_kib(process.pid)
            with self.lock:
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), peak)
        pid, status, _ = os.wait4(process.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return None
        process.returncode = os.waitstatus_to_exitcode(status)
        with self.lock:
            self.live.pop(process.pid, None)
            peak = self.peaks.pop(process.pid, 0)
        return process.returncode, peak

    def stop(self, process, timeout=SERVICE_STOP_SECONDS):
        """SIGTERM, then SIGKILL after `timeout`; returns (exit code, peak RSS in KiB)."""
        if process.pid not in self.live:
            return process.returncode, 0
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            reaped = self.reap(process, block=False)
            if reaped is not None:
                return reaped
            if time.monotonic() > deadline:
                log(f"{process.bench_name} (pid {process.pid}) did not stop in {timeout}s; SIGKILL")
                process.kill()
                return self.reap(process)
            time.sleep(0.05)

    def stop_all(self):
        with self.lock:
            processes = list(self.live.values())
        for process in processes:
            self.stop(process, timeout=10)

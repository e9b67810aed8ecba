# bench_intake.py - the intake phase of the benchmark: rebound-producer serve with its durable
# outbox, loaded by wrk (Debian's HTTP load tool) with one small note per request over 64 and 16
# keep-alive connections, as a user would measure it. Reports accepted notes per second (2xx
# answers, each given only after its note's outbox commit), request latency p50/p99, the peak
# RSS of serve, and checks that every accepted note reached Kafka.

import json
import os
import re
import shutil
import socket
import subprocess
import time

from common import log, BenchError, median

INTAKE_SECONDS = 10
INTAKE_CONNECTIONS = (64, 16)
INTAKE_THREADS = 2


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wrk_latency_ms(text, percentile):
    """A line of wrk's --latency distribution, e.g. '     99%   12.34ms', in milliseconds."""
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise BenchError(f"wrk printed no {percentile}% latency")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk_requests(text):
    """(requests completed, non-2xx answers, socket errors) from wrk's summary."""
    done = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if not done:
        raise BenchError("wrk printed no request count")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return (int(done.group(1)), int(non_2xx.group(1)) if non_2xx else 0,
            sum(int(group) for group in errors.groups()) if errors else 0)


class IntakePhase:
    """HTTP intake throughput; a mixin of harness.Bench."""

    def intake_run(self, connections, rep):
        if shutil.which("wrk") is None:
            raise BenchError("wrk is missing (apt-get install wrk); bench.sh installs it")
        topic_name = f"intake-{connections}-{rep}"
        topic = self.prefix + topic_name
        self.create_topics(self.prefix, [topic_name], [])
        name = self.next_name(f"intake-{connections}-{rep}")
        outbox = os.path.join(self.work_dir, f"outbox-{name}")
        port = free_port()
        command = [
            os.path.join(self.bin, "rebound-producer"), "--brokers", self.brokers,
            "--topic-prefix", self.prefix, "--topic", topic_name,
            "serve", "--listen", f"127.0.0.1:{port}", "--outbox-dir", outbox,
        ]
        process = self.children.spawn(name, command)
        self.wait_ready(process, port)
        note_file = os.path.join(self.work_dir, "intake-note.json")
        sample = dict(self.intake_note)
        sample["note_id"] = "NOTE_ID"
        with open(note_file, "w", encoding="utf-8") as handle:
            json.dump(sample, handle, ensure_ascii=False, separators=(",", ":"))
        wrk = [
            "wrk", "--latency", "-t", str(INTAKE_THREADS), "-c", str(connections), "-d", f"{INTAKE_SECONDS}s",
            "-s", os.path.join(os.path.dirname(os.path.abspath(__file__)), "intake.lua"),
            f"http://127.0.0.1:{port}",
        ]
        done = subprocess.run(wrk, capture_output=True, text=True, timeout=INTAKE_SECONDS + 60, check=False,
                              env={**os.environ, "INTAKE_NOTE_FILE": note_file})
        with open(os.path.join(self.log_dir, f"{name}.wrk.txt"), "w", encoding="utf-8") as handle:
            handle.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BenchError(f"wrk failed (exit {done.returncode}): {done.stderr.strip()}")
        requests, non_2xx, socket_errors = wrk_requests(done.stdout)
        accepted = requests - non_2xx
        # Every 202 was durable: once the relay has drained, the topic holds every accepted note.
        deadline = time.monotonic() + 120
        stored = self.end_offsets(topic)
        while stored < accepted and time.monotonic() < deadline:
            time.sleep(0.25)
            stored = self.end_offsets(topic)
        _, rss = self.children.stop(process)
        shutil.rmtree(outbox, ignore_errors=True)
        if stored < accepted:
            raise BenchError(f"{name}: {topic} holds {stored} records, {accepted} notes were accepted")
        return {
            "accepted": accepted, "non_2xx": non_2xx, "socket_errors": socket_errors,
            "notes_per_s": accepted / INTAKE_SECONDS,
            "latency_ms_p50": wrk_latency_ms(done.stdout, 50), "latency_ms_p99": wrk_latency_ms(done.stdout, 99),
            "rss_kib": rss, "records_on_topic": stored,
        }

    def bench_intake(self):
        with open(self.datasets["small"]["ndjson"], encoding="utf-8") as handle:
            self.intake_note = json.loads(handle.readline())
        for connections in INTAKE_CONNECTIONS:
            runs = []
            for rep in range(self.args.runs):
                run = self.intake_run(connections, rep)
                log(f"intake {connections} connections rep {rep}: {run['notes_per_s']:.0f} notes/s accepted, "
                    f"p50 {run['latency_ms_p50']:.1f} ms, p99 {run['latency_ms_p99']:.1f} ms, "
                    f"{run['non_2xx']} refused, RSS {run['rss_kib'] / 1024:.1f} MiB")
                runs.append(run)
            self.results["runs"][f"intake_{connections}"] = runs
            self.results["summary"][f"intake_{connections}"] = {
                "connections": connections,
                "seconds": INTAKE_SECONDS,
                "notes_per_s": median(run["notes_per_s"] for run in runs),
                "latency_ms_p50": median(run["latency_ms_p50"] for run in runs),
                "latency_ms_p99": median(run["latency_ms_p99"] for run in runs),
                "refused": sum(run["non_2xx"] for run in runs),
                "peak_rss_kib": max(run["rss_kib"] for run in runs),
            }
            self.write_results()

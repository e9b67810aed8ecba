#!/usr/bin/env python3
# harness.py - the measuring half of scripts/bench.sh: runs rebound's services and kcat against a
# real Kafka broker, in one run, and writes the results as raw JSON and a Markdown table.
#
# Usage: scripts/bench/harness.py --repo DIR --bin-dir DIR --out DIR [options]   (via bench.sh)
#
# Every figure is the median of --runs repetitions; every comparison is a ratio of two figures
# measured in the same repetition, one right after the other, so slow phases of a shared machine
# hit both sides. Each repetition uses its own topics and consumer group. Children are stopped
# (SIGTERM, then SIGKILL) on any exit, and the topics the run created are deleted at the end.

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import notes as notegen  # noqa: E402

# Separates records in kcat -P input. Multi-byte, since Avro payloads can hold any single byte;
# every payload is checked not to contain it.
RECORD_DELIMITER = b"\xfe\xfd|EOR|\xfc"
KEY_DELIMITER = b"\t"
# kcat gets the producer settings rebound's RecordProducer uses, so the comparison is between
# clients, not configurations.
KCAT_PRODUCER_SETTINGS = [
    "-X", "enable.idempotence=true",
    "-X", "acks=all",
    "-X", "compression.type=lz4",
    "-X", "linger.ms=5",
]
METRICS_POLL_SECONDS = 0.02
# How often the peak RSS of every running child is read.
RSS_SAMPLE_SECONDS = 0.02
SERVICE_STOP_SECONDS = 40


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which and where its log is."""


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
        log_path = os.path.join(self.log_dir, f"{name}.log")
        log_file = open(log_path, "ab")
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


class FailOnceReceiver:
    """A webhook on loopback that answers each note version's first POST with 503 and later ones
    with 200, noting when it answered the first and when the second arrived (wall clock, ms)."""

    def __init__(self):
        import http.server

        self.failed_at_ms = {}
        self.reapplied_at_ms = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                # One entry per note version: the dataset holds several versions of some notes.
                note_id = self.headers.get("Idempotency-Key")
                with owner.lock:
                    first = note_id not in owner.failed_at_ms
                    if not first and note_id not in owner.reapplied_at_ms:
                        owner.reapplied_at_ms[note_id] = time.time() * 1000
                self.send_response(503 if first else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if first:
                    with owner.lock:
                        owner.failed_at_ms[note_id] = time.time() * 1000

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notes"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reapplied(self):
        with self.lock:
            return len(self.reapplied_at_ms)

    def lateness_beyond_ms(self, delay_ms):
        with self.lock:
            return [self.reapplied_at_ms[key] - self.failed_at_ms[key] - delay_ms for key in self.reapplied_at_ms]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None, ""


def scrape(port):
    """Prometheus samples of a service as {'name{labels}': value}."""
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    samples = {}
    if status != 200:
        return samples
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            samples[series] = float(value)
        except ValueError:
            pass
    return samples


def sum_series(samples, name, *label_fragments):
    return sum(
        value
        for series, value in samples.items()
        if series.startswith(name + "{") and all(fragment in series for fragment in label_fragments)
    )


def consumer_outcomes(samples):
    total = "rebound_consumer_records_total"
    return {
        "applied": sum_series(samples, total, 'outcome="applied"'),
        "retried": sum_series(samples, total, 'outcome="retried"'),
        "dead_lettered": sum_series(samples, total, 'outcome="dead_lettered"'),
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.brokers = args.brokers
        self.bin = args.bin_dir
        self.out = args.out
        self.run_id = os.path.basename(os.path.normpath(args.out))
        self.prefix = f"{self.run_id}."
        self.log_dir = os.path.join(self.out, "logs")
        self.work_dir = os.path.join(self.out, "work")
        os.makedirs(self.log_dir, exist_ok=True)
        os.makedirs(self.work_dir, exist_ok=True)
        self.children = Children(self.log_dir)
        self.created_topics = []
        self.results = {"runs": {}, "summary": {}}
        self.sequence = 0

    # -------------------------------------------------------------------------------------------
    # Plumbing.

    def next_name(self, label):
        self.sequence += 1
        return f"{self.sequence:03d}-{label}"

    def run_quiet(self, name, command, timeout=120, stdin=None):
        """Runs a short command to completion; raises with its log on failure."""
        process = self.children.spawn(name, command, stdin=stdin)
        deadline = time.monotonic() + timeout
        while True:
            reaped = self.children.reap(process, block=False)
            if reaped is not None:
                break
            if time.monotonic() > deadline:
                self.children.stop(process, timeout=5)
                raise BenchError(f"{name} timed out after {timeout}s; see {process.bench_log}")
            time.sleep(0.02)
        code, _ = reaped
        if code != 0:
            raise BenchError(f"{name} exited with {code}; see {process.bench_log}")

    def create_topics(self, prefix, sources, tiers):
        command = [
            os.path.join(self.bin, "rebound"), "--brokers", self.brokers, "topics", "create",
            "--topic-prefix", prefix, "--partitions", str(self.args.partitions),
        ]
        for source in sources:
            command += ["--source-topic", source]
        for tier in tiers:
            command += ["--tier", tier]
        self.run_quiet(self.next_name("topics"), command)
        self.created_topics += [prefix + name for name in list(sources) + list(tiers) + ["dlq"]]

    def end_offsets(self, topic):
        """Sum of the partitions' end offsets: the records a fresh topic holds."""
        command = ["kcat", "-Q", "-J", "-b", self.brokers]
        for partition in range(self.args.partitions):
            command += ["-t", f"{topic}:{partition}:-1"]
        # Right after a topic is created its partitions may have no leader yet: ask again.
        for _ in range(20):
            done = subprocess.run(command, capture_output=True, timeout=30, check=False)
            if done.returncode == 0:
                described = json.loads(done.stdout)
                return sum(
                    entry["offset"] for key, entry in described[topic].items()
                    if key != "topic" and entry["offset"] >= 0
                )
            time.sleep(0.25)
        raise BenchError(f"cannot read the end offsets of {topic}: {done.stderr.decode(errors='replace').strip()}")

    def wait_ready(self, process, port, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.children.reap(process, block=False) is not None:
                raise BenchError(f"{process.bench_name} exited early; see {process.bench_log}")
            status, _ = http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if status == 200:
                return
            time.sleep(0.05)
        raise BenchError(f"{process.bench_name} not ready after {timeout}s; see {process.bench_log}")

    def delete_created_topics(self):
        """Deletes this run's topics (DeleteTopics v1, sent directly: no other tool is assumed)."""
        names = sorted(set(self.created_topics))
        if not names:
            return
        host, _, port = self.brokers.split(",")[0].rpartition(":")
        body = struct.pack(">i", len(names))
        for name in names:
            encoded = name.encode("utf-8")
            body += struct.pack(">h", len(encoded)) + encoded
        body += struct.pack(">i", 30000)
        client_id = b"rebound-bench"
        header = struct.pack(">hhih", 20, 1, 1, len(client_id)) + client_id
        request = header + body
        try:
            with socket.create_connection((host, int(port)), timeout=40) as connection:
                connection.sendall(struct.pack(">i", len(request)) + request)
                size = struct.unpack(">i", self._recv_exact(connection, 4))[0]
                response = self._recv_exact(connection, size)
            # correlation id, throttle time, then [name, error code] per topic.
            count = struct.unpack(">i", response[8:12])[0]
            position, failed = 12, []
            for _ in range(count):
                length = struct.unpack(">h", response[position:position + 2])[0]
                name = response[position + 2:position + 2 + length].decode()
                position += 2 + length
                error = struct.unpack(">h", response[position:position + 2])[0]
                position += 2
                if error:
                    failed.append(f"{name} (error {error})")
            if failed:
                log(f"could not delete topics: {', '.join(failed)}")
            else:
                log(f"deleted the run's {len(names)} topics")
        except (OSError, struct.error) as error:
            log(f"could not delete the run's topics ({error}); they are named {self.prefix}*")

    @staticmethod
    def _recv_exact(connection, size):
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise OSError("connection closed")
            data += chunk
        return data

    # -------------------------------------------------------------------------------------------
    # Records.

    def prepare_records(self):
        header = notegen.single_object_header(os.path.join(self.args.repo, "schemas", "note.avsc"))
        self.header = header
        self.datasets = {}
        counts = {"small": self.args.small_count, "large": self.args.large_count}
        for size, count in counts.items():
            notes = notegen.generate(count, size, seed=7, run_id=self.run_id, base_time_ms=int(time.time() * 1000))
            payloads = [notegen.encode(header, note) for note in notes]
            ndjson = os.path.join(self.work_dir, f"notes-{size}.ndjson")
            with open(ndjson, "w", encoding="utf-8") as handle:
                for note in notes:
                    handle.write(json.dumps(note, ensure_ascii=False, separators=(",", ":")) + "\n")
            kcat_input = os.path.join(self.work_dir, f"notes-{size}.kcat")
            with open(kcat_input, "wb") as handle:
                for note, payload in zip(notes, payloads):
                    if RECORD_DELIMITER in payload:
                        raise BenchError("a payload contains the kcat record delimiter; change RECORD_DELIMITER")
                    handle.write(note["note_id"].encode() + KEY_DELIMITER + payload + RECORD_DELIMITER)
            mean_bytes = statistics.mean(len(payload) for payload in payloads)
            self.datasets[size] = {
                "count": count,
                "ndjson": ndjson,
                "kcat": kcat_input,
                "payloads": set(payloads),
                "sample_payloads": payloads[:64],
                "mean_bytes": mean_bytes,
            }
            log(f"{count} {size} notes, {mean_bytes:.0f} B each on average")

    def check_same_payloads(self, topic, size):
        """The Rust codec and this harness's encoder wrote the same bytes: every record read back
        from a topic `rebound-producer send` wrote is one of the payloads kcat publishes."""
        sample = 2000
        output = subprocess.run(
            ["kcat", "-C", "-b", self.brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-c", str(sample),
             "-f", "%S\n%s"],
            capture_output=True, timeout=60, check=True,
        ).stdout
        position, checked, known = 0, 0, self.datasets[size]["payloads"]
        while position < len(output):
            newline = output.index(b"\n", position)
            length = int(output[position:newline])
            payload = output[newline + 1:newline + 1 + length]
            position = newline + 1 + length
            if payload not in known:
                raise BenchError(
                    f"a record rebound-producer wrote to {topic} is not byte-identical to the harness's "
                    f"encoding (first bytes {payload[:16].hex()}, harness header {self.header.hex()}); "
                    "scripts/bench/notes.py no longer matches schemas/note.avsc"
                )
            checked += 1
        log(f"{checked} records written by rebound-producer match the kcat payloads byte for byte")

    # -------------------------------------------------------------------------------------------
    # 1. Producer.

    def produce_with_kcat(self, name, topic, input_path, limit=None, extra=()):
        command = ["kcat", "-P", "-b", self.brokers, "-t", topic, "-K", KEY_DELIMITER, "-D", RECORD_DELIMITER, "-q"]
        command += KCAT_PRODUCER_SETTINGS + list(extra)
        if limit is not None:
            command += ["-c", str(limit)]
        with open(input_path, "rb") as stdin:
            started = time.monotonic()
            process = self.children.spawn(name, command, stdin=stdin)
            code, rss = self.children.reap(process)
        seconds = time.monotonic() - started
        if code != 0:
            raise BenchError(f"{name} exited with {code}; see {process.bench_log}")
        return seconds, rss

    def producer_run(self, size, variant, rep):
        dataset = self.datasets[size]
        topic_name = f"prod-{size}-{variant}-{rep}"
        topic = self.prefix + topic_name
        name = self.next_name(f"producer-{size}-{variant}-{rep}")
        if variant == "kcat":
            seconds, rss = self.produce_with_kcat(name, topic, dataset["kcat"])
        else:
            outbox = os.path.join(self.work_dir, f"outbox-{name}")
            command = [
                os.path.join(self.bin, "rebound-producer"), "--brokers", self.brokers,
                "--topic-prefix", self.prefix, "--topic", topic_name,
                "send", dataset["ndjson"], "--outbox-dir", outbox, "--timeout", "300s",
            ]
            if variant == "send_direct":
                command.append("--no-outbox")
            started = time.monotonic()
            process = self.children.spawn(name, command)
            code, rss = self.children.reap(process)
            seconds = time.monotonic() - started
            if code != 0:
                raise BenchError(f"{name} exited with {code}; see {process.bench_log}")
            shutil.rmtree(outbox, ignore_errors=True)
        stored = self.end_offsets(topic)
        if stored < dataset["count"]:
            raise BenchError(f"{name}: {topic} holds {stored} records, expected {dataset['count']}")
        return {"seconds": seconds, "notes_per_s": dataset["count"] / seconds, "rss_kib": rss,
                "records_on_topic": stored, "topic": topic}

    def bench_producer(self):
        variants = ["kcat", "send_direct", "send_outbox"]
        for size in ("small", "large"):
            runs = []
            for rep in range(self.args.runs):
                # The order rotates so that no variant always runs first (on a cold broker).
                order = variants[rep % 3:] + variants[:rep % 3]
                row = {"rep": rep}
                for variant in order:
                    row[variant] = self.producer_run(size, variant, rep)
                if rep == 0:
                    self.check_same_payloads(row["send_outbox"]["topic"], size)
                row["direct_vs_kcat"] = row["send_direct"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                row["outbox_vs_kcat"] = row["send_outbox"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                log(
                    f"producer {size} rep {rep}: kcat {row['kcat']['notes_per_s']:.0f}/s, "
                    f"send --no-outbox {row['send_direct']['notes_per_s']:.0f}/s, "
                    f"send (outbox) {row['send_outbox']['notes_per_s']:.0f}/s"
                )
                runs.append(row)
            self.results["runs"][f"producer_{size}"] = runs
            self.results["summary"][f"producer_{size}"] = {
                "notes": self.datasets[size]["count"],
                "mean_record_bytes": self.datasets[size]["mean_bytes"],
                **{f"{variant}_notes_per_s": median(run[variant]["notes_per_s"] for run in runs) for variant in variants},
                "direct_vs_kcat": median(run["direct_vs_kcat"] for run in runs),
                "outbox_vs_kcat": median(run["outbox_vs_kcat"] for run in runs),
                **{f"{variant}_peak_rss_kib": max(run[variant]["rss_kib"] for run in runs) for variant in variants},
            }
            self.write_results()

    # -------------------------------------------------------------------------------------------
    # 2. Consumer happy path.

    def kcat_consume(self, name, topic, expected):
        # With librdkafka's default fetch.wait.max.ms (500 ms) kcat notices the end of a
        # partition only after an empty fetch has waited that long, which would be charged to
        # its throughput; rebound's run ends when its counters reach the count instead.
        command = ["kcat", "-C", "-b", self.brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n",
                   "-X", "fetch.wait.max.ms=10"]
        started = time.monotonic()
        process = self.children.spawn(name, command, stdout=subprocess.PIPE)
        first_at, count = None, 0
        for _ in process.stdout:
            if first_at is None:
                first_at = time.monotonic()
            count += 1
        done_at = time.monotonic()
        code, rss = self.children.reap(process)
        if code != 0 or count < expected:
            raise BenchError(f"{name} exited with {code} after {count} of {expected} records; see {process.bench_log}")
        return {
            "seconds_wall": done_at - started,
            "seconds_steady": done_at - first_at,
            "notes_per_s": count / (done_at - first_at),
            "notes_per_s_wall": count / (done_at - started),
            "rss_kib": rss,
        }

    def consumer_command(self, prefix, source, group, sink, port, extra=()):
        return [
            os.path.join(self.bin, "rebound-consumer"), "--brokers", self.brokers,
            "--topic-prefix", prefix, "--source-topic", source, "--group", group,
            "--sink", sink, "--batch-size", "500", "--metrics-listen", f"127.0.0.1:{port}",
            *extra, *self.args.consumer_extra.split(),
        ]

    def watch_consumer(self, process, port, expected, done, timeout):
        """Polls /metrics until `done(outcomes)`; returns timings from start and from the first
        record the consumer finished (start-up and group join excluded)."""
        first_at = first_count = None
        deadline = time.monotonic() + timeout
        outcomes = {}
        while True:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"{process.bench_name}: not done after {timeout}s ({outcomes}); see {process.bench_log}")
            if self.children.reap(process, block=False) is not None:
                raise BenchError(f"{process.bench_name} exited early; see {process.bench_log}")
            outcomes = consumer_outcomes(scrape(port))
            finished = outcomes["applied"] + outcomes["retried"] + outcomes["dead_lettered"]
            if first_at is None and finished > 0:
                first_at, first_count = now, finished
            if done(outcomes):
                return {
                    "seconds_wall": now - process.bench_started,
                    "seconds_steady": now - first_at,
                    "notes_per_s": (expected - first_count) / max(now - first_at, 1e-6),
                    "notes_per_s_wall": expected / (now - process.bench_started),
                    "outcomes": outcomes,
                }
            time.sleep(METRICS_POLL_SECONDS)

    def consumer_run(self, size, variant, rep, source_topic):
        expected = self.datasets[size]["count"]
        name = self.next_name(f"consumer-{size}-{variant}-{rep}")
        if variant == "kcat":
            return self.kcat_consume(name, self.prefix + source_topic, expected)
        port = free_port()
        sink = "null://"
        if variant == "sqlite":
            sink = "sqlite://" + os.path.join(self.work_dir, f"{name}.db")
        process = self.children.spawn(
            name, self.consumer_command(self.prefix, source_topic, f"{self.run_id}-{name}", sink, port)
        )
        result = self.watch_consumer(
            process, port, expected,
            lambda outcomes: outcomes["applied"] + outcomes["dead_lettered"] >= expected, timeout=300,
        )
        code, rss = self.children.stop(process)
        result["rss_kib"] = rss
        result["exit_code"] = code
        if result["outcomes"]["dead_lettered"]:
            raise BenchError(f"{name}: {result['outcomes']['dead_lettered']:.0f} records dead-lettered; see {process.bench_log}")
        if variant == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                path = os.path.join(self.work_dir, f"{name}.db{suffix}")
                if os.path.exists(path):
                    os.remove(path)
        return result

    def bench_consumer(self):
        variants = ["kcat", "null", "sqlite"]
        for size in ("small", "large"):
            # kcat wrote this topic; the consumer decoding all of it without a dead letter is a
            # second check that the payloads are what the Rust codec writes.
            source_topic = f"prod-{size}-kcat-0"
            if self.end_offsets(self.prefix + source_topic) < self.datasets[size]["count"]:
                # The producer phase did not run: fill the topic the same way it would have.
                self.produce_with_kcat(self.next_name(f"fill-{size}"), self.prefix + source_topic, self.datasets[size]["kcat"])
            runs = []
            for rep in range(self.args.runs):
                order = variants[rep % 3:] + variants[:rep % 3]
                row = {"rep": rep}
                for variant in order:
                    row[variant] = self.consumer_run(size, variant, rep, source_topic)
                row["null_vs_kcat"] = row["null"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                row["sqlite_vs_kcat"] = row["sqlite"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                log(
                    f"consumer {size} rep {rep}: kcat -C {row['kcat']['notes_per_s']:.0f}/s, "
                    f"null sink {row['null']['notes_per_s']:.0f}/s, sqlite sink {row['sqlite']['notes_per_s']:.0f}/s"
                )
                runs.append(row)
            self.results["runs"][f"consumer_{size}"] = runs
            summary = {"notes": self.datasets[size]["count"]}
            for variant in variants:
                summary[f"{variant}_notes_per_s"] = median(run[variant]["notes_per_s"] for run in runs)
                summary[f"{variant}_notes_per_s_wall"] = median(run[variant]["notes_per_s_wall"] for run in runs)
                summary[f"{variant}_peak_rss_kib"] = max(run[variant]["rss_kib"] for run in runs)
            summary["null_vs_kcat"] = median(run["null_vs_kcat"] for run in runs)
            summary["sqlite_vs_kcat"] = median(run["sqlite_vs_kcat"] for run in runs)
            self.results["summary"][f"consumer_{size}"] = summary
            self.write_results()

    # -------------------------------------------------------------------------------------------
    # 3. Failure path.

    def failure_run(self, transient, rep):
        count = self.args.failure_count
        label = f"f{rep}-{int(transient * 100)}"
        prefix = f"{self.run_id}-{label}."
        self.create_topics(prefix, ["notes"], ["retry-5s", "retry-1m"])
        self.produce_with_kcat(self.next_name(f"fill-{label}"), prefix + "notes", self.datasets["small"]["kcat"], limit=count)
        tiers = ["--tier", "retry-5s:0s", "--tier", "retry-1m:0s"]
        scheduler_port = free_port()
        scheduler = self.children.spawn(
            self.next_name(f"scheduler-{label}"),
            [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
             "--group", f"{self.run_id}-{label}-scheduler", *tiers, "--metrics-listen", f"127.0.0.1:{scheduler_port}"],
        )
        self.wait_ready(scheduler, scheduler_port)
        port = free_port()
        consumer = self.children.spawn(
            self.next_name(f"consumer-{label}"),
            self.consumer_command(
                prefix, "notes", f"{self.run_id}-{label}-consumer", "null://", port,
                extra=["--inject-failures", f"transient={transient}", "--inject-seed", str(rep + 1), *tiers],
            ),
        )
        result = self.watch_consumer(
            consumer, port, count,
            lambda outcomes: outcomes["applied"] + outcomes["dead_lettered"] >= count, timeout=300,
        )
        consumer_code, consumer_rss = self.children.stop(consumer)
        scheduler_code, scheduler_rss = self.children.stop(scheduler)
        result.update(
            consumer_rss_kib=consumer_rss, scheduler_rss_kib=scheduler_rss,
            consumer_exit_code=consumer_code, scheduler_exit_code=scheduler_code, transient=transient,
        )
        return result

    def bench_failure(self):
        runs = []
        for rep in range(self.args.runs):
            row = {"rep": rep}
            for transient in ((0.0, 0.1) if rep % 2 == 0 else (0.1, 0.0)):
                row["fail_10" if transient else "fail_0"] = self.failure_run(transient, rep)
            row["overhead"] = row["fail_10"]["seconds_steady"] / row["fail_0"]["seconds_steady"]
            row["overhead_wall"] = row["fail_10"]["seconds_wall"] / row["fail_0"]["seconds_wall"]
            log(
                f"failure path rep {rep}: 0% {row['fail_0']['seconds_steady']:.2f}s, "
                f"10% {row['fail_10']['seconds_steady']:.2f}s ({row['fail_10']['outcomes']['retried']:.0f} retried), "
                f"overhead {row['overhead']:.2f}x"
            )
            runs.append(row)
        self.results["runs"]["failure"] = runs
        self.results["summary"]["failure"] = {
            "notes": self.args.failure_count,
            "fail_0_seconds": median(run["fail_0"]["seconds_steady"] for run in runs),
            "fail_10_seconds": median(run["fail_10"]["seconds_steady"] for run in runs),
            "fail_0_seconds_wall": median(run["fail_0"]["seconds_wall"] for run in runs),
            "fail_10_seconds_wall": median(run["fail_10"]["seconds_wall"] for run in runs),
            "overhead": median(run["overhead"] for run in runs),
            "overhead_wall": median(run["overhead_wall"] for run in runs),
            "retried": median(run["fail_10"]["outcomes"]["retried"] for run in runs),
            "consumer_peak_rss_kib": max(run[key]["consumer_rss_kib"] for run in runs for key in ("fail_0", "fail_10")),
            "scheduler_peak_rss_kib": max(run[key]["scheduler_rss_kib"] for run in runs for key in ("fail_0", "fail_10")),
        }
        self.write_results()

    # -------------------------------------------------------------------------------------------
    # 4. Retry timing as a user sees it: notes that fail once at a webhook come back after the
    #    tier's delay; how much later than that, measured at the receiver.

    def retry_timing_run(self, label, count, tier_ms, rate, rep):
        prefix = f"{self.run_id}-{label}-{rep}."
        self.create_topics(prefix, ["notes"], ["retry-5s", "retry-1m"])
        receiver = FailOnceReceiver()
        tiers = ["--tier", f"retry-5s:{tier_ms}ms", "--tier", f"retry-1m:{tier_ms}ms"]
        scheduler_port = free_port()
        scheduler = self.children.spawn(
            self.next_name(f"scheduler-{label}"),
            [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
             "--group", f"{prefix}scheduler", *tiers, "--metrics-listen", f"127.0.0.1:{scheduler_port}"],
        )
        consumer_port = free_port()
        consumer = self.children.spawn(
            self.next_name(f"consumer-{label}"),
            self.consumer_command(
                prefix, "notes", f"{prefix}consumer", receiver.url, consumer_port, extra=tiers,
            ),
        )
        try:
            self.wait_ready(scheduler, scheduler_port)
            self.wait_ready(consumer, consumer_port)
            kcat = self.children.spawn(
                self.next_name(f"load-{label}"),
                ["kcat", "-P", "-b", self.brokers, "-t", prefix + "notes", "-K", KEY_DELIMITER, "-D",
                 RECORD_DELIMITER, "-q", *KCAT_PRODUCER_SETTINGS],
                stdin=subprocess.PIPE,
            )
            with open(self.datasets["small"]["kcat"], "rb") as source:
                records = source.read().split(RECORD_DELIMITER)[:count]
            for record in records:
                kcat.stdin.write(record + RECORD_DELIMITER)
                kcat.stdin.flush()
                if rate:
                    time.sleep(1.0 / rate)
            kcat.stdin.close()
            self.children.reap(kcat)
            deadline = time.monotonic() + 120
            while receiver.reapplied() < count:
                if time.monotonic() > deadline:
                    raise BenchError(f"{label}: {receiver.reapplied()} of {count} notes re-applied after 120 s")
                time.sleep(0.05)
        finally:
            self.children.stop(consumer)
            self.children.stop(scheduler)
            receiver.close()
        beyond = receiver.lateness_beyond_ms(tier_ms)
        return {
            "count": count, "tier_ms": tier_ms, "rate": rate,
            "beyond_ms_p50": percentile(beyond, 0.50),
            "beyond_ms_p99": percentile(beyond, 0.99),
            "beyond_ms_max": max(beyond),
            "beyond_ms_min": min(beyond),
        }

    def bench_retry_timing(self):
        shapes = {
            # A trickle: one failing note every 200 ms on a 1 s tier.
            "trickle": {"count": 30, "tier_ms": 1000, "rate": 5},
            # A burst: 100 failing notes at once on a 500 ms tier.
            "burst": {"count": 100, "tier_ms": 500, "rate": 0},
        }
        summary = {}
        for shape, params in shapes.items():
            runs = [self.retry_timing_run(shape, rep=rep, **params) for rep in range(self.args.runs)]
            for run in runs:
                log(f"retry timing {shape}: beyond the delay p50 {run['beyond_ms_p50']:.0f} ms, "
                    f"p99 {run['beyond_ms_p99']:.0f} ms, min {run['beyond_ms_min']:.0f} ms")
            self.results["runs"][f"retry_{shape}"] = runs
            summary[shape] = {
                **params,
                "beyond_ms_p50": median(run["beyond_ms_p50"] for run in runs),
                "beyond_ms_p99": median(run["beyond_ms_p99"] for run in runs),
                "beyond_ms_max": max(run["beyond_ms_max"] for run in runs),
                "beyond_ms_min_over_runs": min(run["beyond_ms_min"] for run in runs),
            }
        self.results["summary"]["retry_timing"] = summary
        self.write_results()

    # -------------------------------------------------------------------------------------------
    # 5. Scheduler timing.

    def read_timestamps(self, topic):
        """{key: [(Kafka timestamp, partition)]} of a whole topic."""
        output = subprocess.run(
            ["kcat", "-C", "-b", self.brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k %T %p\n"],
            capture_output=True, timeout=120, check=True,
        ).stdout
        stamps = {}
        for line in output.splitlines():
            key, stamp, partition = line.rsplit(b" ", 2)
            stamps.setdefault(key, []).append((int(stamp), int(partition)))
        return stamps

    def scheduler_run(self, rate, rep):
        seconds = self.args.scheduler_seconds
        delay_ms = self.args.scheduler_delay_ms
        count = int(rate * seconds)
        label = f"s{rep}-{rate}"
        prefix = f"{self.run_id}-{label}."
        self.create_topics(prefix, ["notes"], ["retry-5s"])
        port = free_port()
        scheduler = self.children.spawn(
            self.next_name(f"scheduler-{label}"),
            [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
             "--group", f"{self.run_id}-{label}", "--tier", f"retry-5s:{delay_ms}ms",
             "--metrics-listen", f"127.0.0.1:{port}", *self.args.scheduler_extra.split()],
        )
        self.wait_ready(scheduler, port)
        # Tier records as the consumer writes them. kcat sets the same headers on every record,
        # so the due time is the scheduler's fallback, the record's timestamp plus the tier
        # delay, which is what the consumer's retry.due.timestamp amounts to (failure time plus
        # delay, written just before the copy is produced).
        headers = [
            "retry.attempt=1", f"retry.tier={prefix}retry-5s", f"retry.original.topic={prefix}notes",
            "retry.original.partition=0", "retry.original.offset=0", "retry.error.kind=transient",
            "retry.error.message=benchmark",
        ]
        command = ["kcat", "-P", "-b", self.brokers, "-t", prefix + "retry-5s", "-K", KEY_DELIMITER,
                   "-D", RECORD_DELIMITER, "-q", *KCAT_PRODUCER_SETTINGS]
        for header in headers:
            command += ["-H", header]
        samples = self.datasets["small"]["sample_payloads"]
        lines = [
            f"s{index:08d}".encode() + KEY_DELIMITER + samples[index % len(samples)] + RECORD_DELIMITER
            for index in range(count)
        ]
        producer = self.children.spawn(self.next_name(f"tier-writer-{label}"), command, stdin=subprocess.PIPE)
        # Paced writes: records reach kcat, and so get their timestamps, at `rate` per second.
        started = time.monotonic()
        written = 0
        pipe = producer.stdin
        while written < count:
            due = min(count, int((time.monotonic() - started) * rate) + 1)
            if due > written:
                pipe.write(b"".join(lines[written:due]))
                pipe.flush()
                written = due
            else:
                time.sleep(0.0005)
        pipe.close()
        code, _ = self.children.reap(producer)
        if code != 0:
            raise BenchError(f"{producer.bench_name} exited with {code}; see {producer.bench_log}")
        deadline = time.monotonic() + delay_ms / 1000 + 120
        republished = 0
        while republished < count:
            if time.monotonic() > deadline:
                raise BenchError(f"{scheduler.bench_name}: {republished} of {count} republished; see {scheduler.bench_log}")
            republished = sum_series(scrape(port), "rebound_scheduler_republished_total")
            time.sleep(0.1)
        scheduler_code, rss = self.children.stop(scheduler)
        tier = self.read_timestamps(prefix + "retry-5s")
        source = self.read_timestamps(prefix + "notes")
        lateness = []
        duplicates = 0
        series = []
        for key, stamps in source.items():
            duplicates += len(stamps) - 1
            tier_stamp, tier_partition = tier[key][0]
            lateness.append(min(stamp for stamp, _ in stamps) - (tier_stamp + delay_ms))
            series.append((tier_stamp, tier_partition, lateness[-1]))
        # Lateness by due time and tier partition, to see where in a run the late records are.
        with open(os.path.join(self.out, f"scheduler-{label}.csv"), "w", encoding="utf-8") as handle:
            handle.write("tier_timestamp_ms,tier_partition,lateness_ms\n")
            handle.writelines(f"{stamp},{partition},{late}\n" for stamp, partition, late in sorted(series))
        tier_stamps = sorted(stamps[0][0] for stamps in tier.values())
        span_seconds = max((tier_stamps[-1] - tier_stamps[0]) / 1000, 1e-3)
        return {
            "rate_target": rate,
            "rate_achieved": len(tier_stamps) / span_seconds,
            "records": count,
            "republished": len(lateness),
            "duplicates": duplicates,
            "lateness_ms_min": min(lateness),
            "lateness_ms_p50": percentile(lateness, 0.50),
            "lateness_ms_p99": percentile(lateness, 0.99),
            "lateness_ms_max": max(lateness),
            "early": sum(1 for value in lateness if value < 0),
            "rss_kib": rss,
            "exit_code": scheduler_code,
        }

    def bench_scheduler(self):
        summary = {}
        for rate in self.args.scheduler_rates:
            runs = []
            for rep in range(self.args.runs):
                run = self.scheduler_run(rate, rep)
                log(
                    f"scheduler {rate}/s rep {rep}: achieved {run['rate_achieved']:.0f}/s, lateness p50 "
                    f"{run['lateness_ms_p50']} ms, p99 {run['lateness_ms_p99']} ms, max {run['lateness_ms_max']} ms, "
                    f"min {run['lateness_ms_min']} ms"
                )
                runs.append(run)
            self.results["runs"][f"scheduler_{rate}"] = runs
            summary[str(rate)] = {
                "records": runs[0]["records"],
                "rate_achieved": median(run["rate_achieved"] for run in runs),
                "lateness_ms_p50": median(run["lateness_ms_p50"] for run in runs),
                "lateness_ms_p99": median(run["lateness_ms_p99"] for run in runs),
                "lateness_ms_max": median(run["lateness_ms_max"] for run in runs),
                "lateness_ms_min_over_runs": min(run["lateness_ms_min"] for run in runs),
                "early_over_runs": sum(run["early"] for run in runs),
                "peak_rss_kib": max(run["rss_kib"] for run in runs),
            }
        self.results["summary"]["scheduler"] = summary
        self.write_results()

    # -------------------------------------------------------------------------------------------
    # Report.

    def machine(self):
        def read(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read()
            except OSError:
                return ""

        model = next(
            (line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines() if line.startswith("model name")),
            platform.processor(),
        )
        mem_kib = next(
            (int(line.split()[1]) for line in read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
        )
        kcat = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False).stdout
        kcat_version = next((line.strip() for line in kcat.splitlines() if line.startswith("Version")), "")
        # "Version 1.7.1 (JSON, ..., librdkafka 2.0.2 builtin.features=...)" -> "1.7.1, librdkafka 2.0.2"
        words = kcat_version.replace("(", " ").replace(")", " ").replace(",", " ").split()
        if len(words) > 1:
            librdkafka = next((words[i + 1] for i, word in enumerate(words[:-1]) if word == "librdkafka"), "?")
            kcat_version = f"{words[1]}, librdkafka {librdkafka}"
        # rebound links the librdkafka that rdkafka-sys bundles: "4.10.0+2.12.1" -> "2.12.1".
        lock = read(os.path.join(self.args.repo, "Cargo.lock"))
        rebound_librdkafka = "?"
        if 'name = "rdkafka-sys"' in lock:
            version_line = lock.split('name = "rdkafka-sys"', 1)[1].split("\n")[1]
            rebound_librdkafka = version_line.split('"')[1].split("+")[-1]
        kafka_version = ""
        pom = read(os.path.join(self.args.repo, "scripts", "kafka", "pom.xml"))
        if "<kafka.version>" in pom:
            kafka_version = pom.split("<kafka.version>", 1)[1].split("<", 1)[0]
        return {
            "cpu": model,
            "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(),
            "kcat": kcat_version,
            "rebound_librdkafka": rebound_librdkafka,
            "kafka": f"Apache Kafka {kafka_version} (scripts/kafka-local.sh), single broker" if kafka_version else "",
            "python": platform.python_version(),
        }

    def write_results(self):
        self.results["config"] = {
            key: value for key, value in vars(self.args).items() if key not in ("repo", "bin_dir", "out")
        }
        self.results["run_id"] = self.run_id
        self.results["machine"] = self.machine_info
        self.results["command"] = self.args.command
        with open(os.path.join(self.out, "results.json"), "w", encoding="utf-8") as handle:
            json.dump(self.results, handle, indent=2, sort_keys=True)
        with open(os.path.join(self.out, "results.md"), "w", encoding="utf-8") as handle:
            handle.write(render_markdown(self.results))

    def run(self, phases):
        self.machine_info = self.machine()
        self.results["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        started = time.monotonic()
        self.prepare_records()
        producer_topics = [
            f"prod-{size}-{variant}-{rep}"
            for size in ("small", "large")
            for variant in ("kcat", "send_direct", "send_outbox")
            for rep in range(self.args.runs)
        ]
        self.create_topics(self.prefix, producer_topics, ["retry-5s", "retry-1m"])
        steps = {
            "producer": self.bench_producer,
            "consumer": self.bench_consumer,
            "failure": self.bench_failure,
            "scheduler": self.bench_scheduler,
            "retry": self.bench_retry_timing,
        }
        for phase in phases:
            phase_started = time.monotonic()
            log(f"--- {phase}")
            steps[phase]()
            self.results.setdefault("phase_seconds", {})[phase] = round(time.monotonic() - phase_started, 1)
        self.results["seconds"] = round(time.monotonic() - started, 1)
        self.write_results()


def fmt_rate(value):
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_mib(kib):
    return "n/a" if not kib else f"{kib / 1024:.1f}"


def verdict(ok):
    return "met" if ok else "**missed**"


def render_markdown(results):
    summary = results["summary"]
    lines = [f"Run `{results.get('run_id', '')}`, {results.get('started_at', '')}, "
             f"{results.get('seconds', '?')} s of measurements.", ""]
    machine = results.get("machine", {})
    if machine:
        lines.append(
            f"Machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB RAM, "
            f"Linux {machine.get('kernel')}; {machine.get('kafka')}; kcat {machine.get('kcat')}; "
            f"rebound with librdkafka {machine.get('rebound_librdkafka')}."
        )
        lines.append("")
    lines += ["| measurement | rebound | kcat | ratio | target | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for size in ("small", "large"):
        producer = summary.get(f"producer_{size}")
        if producer:
            label = f"{size} notes ({producer['mean_record_bytes']:.0f} B, {producer['notes']:,})"
            lines.append(
                f"| producer, outbox off, {label} | {fmt_rate(producer['send_direct_notes_per_s'])}/s | "
                f"{fmt_rate(producer['kcat_notes_per_s'])}/s | {fmt_ratio(producer['direct_vs_kcat'])} | >= 1.0x | "
                f"{verdict(producer['direct_vs_kcat'] >= 1.0)} |"
            )
            lines.append(
                f"| producer, durable outbox, {label} | {fmt_rate(producer['send_outbox_notes_per_s'])}/s | "
                f"{fmt_rate(producer['kcat_notes_per_s'])}/s | {fmt_ratio(producer['outbox_vs_kcat'])} | >= 0.8x | "
                f"{verdict(producer['outbox_vs_kcat'] >= 0.8)} |"
            )
    for size in ("small", "large"):
        consumer = summary.get(f"consumer_{size}")
        if consumer:
            label = f"{size} notes ({consumer['notes']:,})"
            lines.append(
                f"| consumer, null sink, {label} | {fmt_rate(consumer['null_notes_per_s'])}/s | "
                f"{fmt_rate(consumer['kcat_notes_per_s'])}/s | {fmt_ratio(consumer['null_vs_kcat'])} | >= 0.9x | "
                f"{verdict(consumer['null_vs_kcat'] >= 0.9)} |"
            )
            lines.append(
                f"| consumer, SQLite sink, {label} | {fmt_rate(consumer['sqlite_notes_per_s'])}/s | "
                f"{fmt_rate(consumer['kcat_notes_per_s'])}/s | {fmt_ratio(consumer['sqlite_vs_kcat'])} | "
                f">= 150,000/s | {verdict(consumer['sqlite_notes_per_s'] >= 150000)} |"
            )
    failure = summary.get("failure")
    if failure:
        lines.append(
            f"| failure path, {failure['notes']:,} small notes, 10% vs 0% transient | "
            f"{failure['fail_10_seconds']:.2f} s vs {failure['fail_0_seconds']:.2f} s | | "
            f"{fmt_ratio(failure['overhead'])} | <= 1.15x | {verdict(failure['overhead'] <= 1.15)} |"
        )
    scheduler = summary.get("scheduler", {})
    for rate, figures in scheduler.items():
        target = ""
        ok = figures["lateness_ms_min_over_runs"] >= 0
        if rate == "10000":
            target = "p99 <= 50 ms, "
            ok = ok and figures["lateness_ms_p99"] <= 50
        lines.append(
            f"| scheduler lateness at {int(rate):,}/s ({fmt_rate(figures['rate_achieved'])}/s reached) | "
            f"p50 {figures['lateness_ms_p50']:.0f} ms, p99 {figures['lateness_ms_p99']:.0f} ms, "
            f"max {figures['lateness_ms_max']:.0f} ms, min {figures['lateness_ms_min_over_runs']:.0f} ms | | | "
            f"{target}never early | {verdict(ok)} |"
        )
    retry_timing = summary.get("retry_timing", {})
    for shape, figures in retry_timing.items():
        what = (f"a trickle of {figures['count']} at {figures['rate']}/s" if figures["rate"]
                else f"a burst of {figures['count']}")
        lines.append(
            f"| retry timing: {what} failing once on a {figures['tier_ms']} ms tier, re-applied beyond the "
            f"delay (at the webhook) | p50 {figures['beyond_ms_p50']:.0f} ms, p99 {figures['beyond_ms_p99']:.0f} ms, "
            f"max {figures['beyond_ms_max']:.0f} ms, min {figures['beyond_ms_min_over_runs']:.0f} ms | | | "
            f"never early; reported | {verdict(figures['beyond_ms_min_over_runs'] >= 0)} |"
        )
    lines += ["", "Peak RSS (MiB, largest over the repetitions; target <= 64 MiB per service):", "",
              "| service and load | peak RSS | verdict |", "| --- | --- | --- |"]
    rss_rows = []
    for size in ("small", "large"):
        producer = summary.get(f"producer_{size}")
        if producer:
            rss_rows.append((f"rebound-producer send, outbox off, {size}", producer["send_direct_peak_rss_kib"]))
            rss_rows.append((f"rebound-producer send, durable outbox, {size}", producer["send_outbox_peak_rss_kib"]))
            rss_rows.append((f"kcat -P (reference), {size}", producer["kcat_peak_rss_kib"]))
    for size in ("small", "large"):
        consumer = summary.get(f"consumer_{size}")
        if consumer:
            rss_rows.append((f"rebound-consumer, null sink, {size}", consumer["null_peak_rss_kib"]))
            rss_rows.append((f"rebound-consumer, SQLite sink, {size}", consumer["sqlite_peak_rss_kib"]))
            rss_rows.append((f"kcat -C (reference), {size}", consumer["kcat_peak_rss_kib"]))
    if failure:
        rss_rows.append(("rebound-consumer, failure path", failure["consumer_peak_rss_kib"]))
        rss_rows.append(("rebound-scheduler, failure path (0 s tiers)", failure["scheduler_peak_rss_kib"]))
    for rate, figures in scheduler.items():
        rss_rows.append((f"rebound-scheduler, {int(rate):,} records/s", figures["peak_rss_kib"]))
    for label, kib in rss_rows:
        reference = "kcat" in label
        lines.append(f"| {label} | {fmt_mib(kib)} | {'' if reference else verdict(kib <= 64 * 1024)} |")
    lines.append("")
    return "\n".join(lines)


def compress_large_files(directory):
    """Gzips logs and series over 1 MiB once measuring is over: the services log every retry and
    republish, which at 50k records/s is tens of MiB per run."""
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith((".log", ".csv")) and os.path.getsize(path) > (1 << 20):
                with open(path, "rb") as source, gzip.open(path + ".gz", "wb", compresslevel=1) as target:
                    shutil.copyfileobj(source, target)
                os.remove(path)


def main():
    parser = argparse.ArgumentParser(description="The measuring half of scripts/bench.sh.")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-count", type=int, default=100000)
    parser.add_argument("--large-count", type=int, default=20000)
    parser.add_argument("--failure-count", type=int, default=100000)
    parser.add_argument("--scheduler-rates", type=lambda text: [int(rate) for rate in text.split(",")],
                        default=[1000, 10000, 50000])
    parser.add_argument("--scheduler-seconds", type=float, default=4.0)
    parser.add_argument("--scheduler-delay-ms", type=int, default=2000)
    parser.add_argument("--consumer-extra", default="", help="extra flags of every consumer (experiments)")
    parser.add_argument("--scheduler-extra", default="", help="extra flags of the timed scheduler (experiments)")
    parser.add_argument("--phases", default="producer,consumer,failure,scheduler,retry")
    parser.add_argument("--command", default="scripts/bench.sh")
    args = parser.parse_args()
    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        bench.run([phase for phase in args.phases.split(",") if phase])
        log(f"results: {os.path.join(args.out, 'results.md')}")
    except (BenchError, subprocess.SubprocessError, OSError) as error:
        log(f"error: {error}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        bench.children.stop_all()
        bench.delete_created_topics()
        # The record files are large and generated again by every run.
        shutil.rmtree(bench.work_dir, ignore_errors=True)
        compress_large_files(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())

# bench_base.py - the benchmark harness's shared plumbing: run folders, children, topics (created
# with `rebound topics create`, deleted with `rebound topics delete --prefix`), the generated
# records and kcat input files, consumer commands, and writing the results.

import json
import os
import statistics
import subprocess
import time

import notes as notegen
from common import RECORD_DELIMITER, KEY_DELIMITER, KCAT_PRODUCER_SETTINGS, METRICS_POLL_SECONDS, log, BenchError
from metrics import http_get, scrape, consumer_outcomes
from children import Children
from report import machine, render_markdown, history_row, source_commit


class BenchBase:
    """What every phase uses: the run's folders and children, topics, records, consumers, and
    the results. The phases are mixins (bench_*.py) that harness.Bench puts together."""

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
        # Every topic prefix the run created topics under; their topics are deleted at the end.
        self.created_prefixes = []
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
        self.created_prefixes.append(prefix)

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
        """Deletes the topics under every prefix the run created topics with, through
        `rebound topics delete --prefix`, which lists what it deleted in the log."""
        deleted, failed = 0, []
        for prefix in sorted(set(self.created_prefixes)):
            name = self.next_name("delete-topics")
            command = [
                os.path.join(self.bin, "rebound"), "--brokers", self.brokers, "topics", "delete",
                "--prefix", prefix, "--output", "json",
            ]
            log_path = os.path.join(self.log_dir, f"{name}.log")
            try:
                with open(log_path, "ab") as log_file:
                    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log_file, timeout=120, check=False)
                    log_file.write(done.stdout)
                if done.returncode != 0:
                    failed.append(f"{prefix}* (exit {done.returncode}, see {log_path})")
                    continue
                deleted += len(json.loads(done.stdout)["topics"])
            except (OSError, ValueError, KeyError, subprocess.SubprocessError) as error:
                failed.append(f"{prefix}* ({error})")
        if failed:
            log(f"could not delete the run's topics: {', '.join(failed)}")
        elif self.created_prefixes:
            log(f"deleted the run's {deleted} topics")
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
    # -------------------------------------------------------------------------------------------
    # Consumers (the consumer, failure and retry phases).

    def consumer_command(self, prefix, source, group, sink, port, extra=()):
        experiment = self.args.consumer_extra.split()
        # The consumer refuses a flag given twice: --consumer-extra's batch size replaces 500.
        batch_size = [] if "--batch-size" in experiment else ["--batch-size", "500"]
        return [
            os.path.join(self.bin, "rebound-consumer"), "--brokers", self.brokers,
            "--topic-prefix", prefix, "--source-topic", source, "--group", group,
            "--sink", sink, *batch_size, "--metrics-listen", f"127.0.0.1:{port}",
            *extra, *experiment,
        ]

    def watch_consumer(self, process, port, expected, done, timeout, counter="rebound_consumer_records_total"):
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
            outcomes = consumer_outcomes(scrape(port), counter)
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
    # -------------------------------------------------------------------------------------------
    # The run.

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
        # The run's row for docs/performance.md's history table.
        with open(os.path.join(self.out, "history-row.md"), "w", encoding="utf-8") as handle:
            handle.write(history_row(self.results) + "\n")

    def run(self, phases):
        self.machine_info = machine(self.args.repo)
        self.results["commit"] = source_commit(self.args.repo)
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
            "intake": self.bench_intake,
            "consumer": self.bench_consumer,
            "failure": self.bench_failure,
            "scheduler": self.bench_scheduler,
            "retry": self.bench_retry_timing,
            "delivery": self.bench_delivery,
            "peer": self.bench_peer,
        }
        for phase in phases:
            phase_started = time.monotonic()
            log(f"--- {phase}")
            steps[phase]()
            self.results.setdefault("phase_seconds", {})[phase] = round(time.monotonic() - phase_started, 1)
        self.results["seconds"] = round(time.monotonic() - started, 1)
        self.write_results()

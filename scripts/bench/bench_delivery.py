# bench_delivery.py - the delivery phase of the benchmark: what exactly-once hops cost. The
# failure path (10% transient failures, consumer and scheduler) and the scheduler draining a
# backlog of due tier records each run with --delivery exactly-once and at-least-once, side by
# side in every repetition (the order alternates), so the ratio compares like with like.

import os
import subprocess
import time

from common import RECORD_DELIMITER, KEY_DELIMITER, KCAT_PRODUCER_SETTINGS, BenchError, log, median, free_port
from metrics import scrape, sum_series

MODES = ("exactly-once", "at-least-once")


class DeliveryPhase:
    """Exactly-once against at-least-once; a mixin of harness.Bench."""

    def scheduler_drain_run(self, count, rep, delivery):
        """`count` tier records, all due, written before the scheduler starts; returns how fast it
        republishes them, from its first republished record to its last."""
        label = f"d{rep}-{delivery}"
        prefix = f"{self.run_id}-{label}."
        self.create_topics(prefix, ["notes"], ["retry-5s"])
        headers = [
            "retry.attempt=1", f"retry.tier={prefix}retry-5s", f"retry.original.topic={prefix}notes",
            "retry.original.partition=0", "retry.original.offset=0", "retry.error.kind=transient",
            "retry.error.message=benchmark", "retry.due.timestamp=0",
        ]
        command = ["kcat", "-P", "-b", self.brokers, "-t", prefix + "retry-5s", "-K", KEY_DELIMITER,
                   "-D", RECORD_DELIMITER, "-q", *KCAT_PRODUCER_SETTINGS]
        for header in headers:
            command += ["-H", header]
        samples = self.datasets["small"]["sample_payloads"]
        writer = self.children.spawn(self.next_name(f"tier-writer-{label}"), command, stdin=subprocess.PIPE)
        writer.stdin.write(b"".join(
            f"d{index:08d}".encode() + KEY_DELIMITER + samples[index % len(samples)] + RECORD_DELIMITER
            for index in range(count)
        ))
        writer.stdin.close()
        code, _ = self.children.reap(writer)
        if code != 0:
            raise BenchError(f"{writer.bench_name} exited with {code}; see {writer.bench_log}")
        port = free_port()
        scheduler = self.children.spawn(
            self.next_name(f"scheduler-{label}"),
            [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
             "--group", f"{self.run_id}-{label}", "--tier", "retry-5s:0ms", "--delivery", delivery,
             "--metrics-listen", f"127.0.0.1:{port}"],
        )
        self.wait_ready(scheduler, port)
        deadline = time.monotonic() + 300
        first_at = first_count = None
        republished = 0
        while republished < count:
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"{scheduler.bench_name}: {republished} of {count} republished; see {scheduler.bench_log}")
            republished = sum_series(scrape(port), "rebound_scheduler_republished_total")
            if first_at is None and republished > 0:
                first_at, first_count = now, republished
            time.sleep(0.05)
        finished_at = time.monotonic()
        code, rss = self.children.stop(scheduler)
        seconds = max(finished_at - first_at, 1e-3)
        return {
            "records": count,
            "seconds": seconds,
            "records_per_s": (count - first_count) / seconds,
            "rss_kib": rss,
            "exit_code": code,
            "delivery": delivery,
        }

    def bench_delivery(self):
        count = self.args.delivery_count
        runs = []
        for rep in range(self.args.runs):
            row = {"rep": rep}
            for delivery in (MODES if rep % 2 == 0 else tuple(reversed(MODES))):
                key = delivery.replace("-", "_")
                row[f"failure_{key}"] = self.failure_run(0.1, rep, delivery=delivery, count=count)
                row[f"drain_{key}"] = self.scheduler_drain_run(count, rep, delivery)
            row["failure_ratio"] = (
                row["failure_exactly_once"]["seconds_steady"] / row["failure_at_least_once"]["seconds_steady"]
            )
            row["drain_ratio"] = (
                row["drain_exactly_once"]["records_per_s"] / row["drain_at_least_once"]["records_per_s"]
            )
            log(
                f"delivery rep {rep}: failure path {row['failure_exactly_once']['seconds_steady']:.2f}s exactly-once vs "
                f"{row['failure_at_least_once']['seconds_steady']:.2f}s at-least-once ({row['failure_ratio']:.2f}x); "
                f"scheduler drain {row['drain_exactly_once']['records_per_s']:.0f}/s vs "
                f"{row['drain_at_least_once']['records_per_s']:.0f}/s ({row['drain_ratio']:.2f}x)"
            )
            runs.append(row)
        self.results["runs"]["delivery"] = runs
        self.results["summary"]["delivery"] = {
            "notes": count,
            "failure_exactly_once_seconds": median(run["failure_exactly_once"]["seconds_steady"] for run in runs),
            "failure_at_least_once_seconds": median(run["failure_at_least_once"]["seconds_steady"] for run in runs),
            "failure_ratio": median(run["failure_ratio"] for run in runs),
            "drain_exactly_once_per_s": median(run["drain_exactly_once"]["records_per_s"] for run in runs),
            "drain_at_least_once_per_s": median(run["drain_at_least_once"]["records_per_s"] for run in runs),
            "drain_ratio": median(run["drain_ratio"] for run in runs),
        }
        self.write_results()

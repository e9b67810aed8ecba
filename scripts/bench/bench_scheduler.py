# bench_scheduler.py - phase 4 of the benchmark: the retry scheduler's timing, tier records
# written at fixed rates and each republished record's lateness past its due time.

import os
import subprocess
import time

from common import RECORD_DELIMITER, KEY_DELIMITER, KCAT_PRODUCER_SETTINGS, log, BenchError, percentile, median, free_port
from metrics import scrape, sum_series


class SchedulerPhase:
    """The scheduler's timing; a mixin of harness.Bench."""

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

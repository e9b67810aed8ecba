# bench_failure.py - phase 3 of the benchmark: the failure path, the consumer with 10% transient
# failures (and the retry scheduler) against the same run with none, and the same 10% with
# per-key order off (`--ordering none`) against the default (`--ordering key`), in one repetition.

import os

from common import log, median, free_port


class FailurePhase:
    """The failure path; a mixin of harness.Bench."""

    def failure_run(self, transient, rep, ordering="key", delivery=None, count=None, label_prefix="f"):
        """One run; `delivery` sets both services' --delivery (their default when None)."""
        count = count or self.args.failure_count
        label = f"{label_prefix}{rep}-{int(transient * 100)}-{ordering}" + (f"-{delivery}" if delivery else "")
        delivery_flags = ["--delivery", delivery] if delivery else []
        prefix = f"{self.run_id}-{label}."
        self.create_topics(prefix, ["notes"], ["retry-5s", "retry-1m"])
        self.produce_with_kcat(self.next_name(f"fill-{label}"), prefix + "notes", self.datasets["small"]["kcat"], limit=count)
        tiers = ["--tier", "retry-5s:0s", "--tier", "retry-1m:0s"]
        scheduler_port = free_port()
        scheduler = self.children.spawn(
            self.next_name(f"scheduler-{label}"),
            [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
             "--group", f"{self.run_id}-{label}-scheduler", *tiers, *delivery_flags,
             "--metrics-listen", f"127.0.0.1:{scheduler_port}"],
        )
        self.wait_ready(scheduler, scheduler_port)
        port = free_port()
        consumer = self.children.spawn(
            self.next_name(f"consumer-{label}"),
            self.consumer_command(
                prefix, "notes", f"{self.run_id}-{label}-consumer", "null://", port,
                extra=["--inject-failures", f"transient={transient}", "--inject-seed", str(rep + 1), *tiers,
                       "--ordering", ordering, *delivery_flags],
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
            ordering=ordering,
        )
        return result

    def bench_failure(self):
        runs = []
        for rep in range(self.args.runs):
            row = {"rep": rep}
            for transient in ((0.0, 0.1) if rep % 2 == 0 else (0.1, 0.0)):
                row["fail_10" if transient else "fail_0"] = self.failure_run(transient, rep)
            # Per-key order on (the default, above) against off, same failures, same repetition.
            row["fail_10_unordered"] = self.failure_run(0.1, rep, ordering="none")
            row["ordering_cost"] = row["fail_10"]["seconds_steady"] / row["fail_10_unordered"]["seconds_steady"]
            row["overhead"] = row["fail_10"]["seconds_steady"] / row["fail_0"]["seconds_steady"]
            row["overhead_wall"] = row["fail_10"]["seconds_wall"] / row["fail_0"]["seconds_wall"]
            log(
                f"failure path rep {rep}: 0% {row['fail_0']['seconds_steady']:.2f}s, "
                f"10% {row['fail_10']['seconds_steady']:.2f}s ({row['fail_10']['outcomes']['retried']:.0f} retried), "
                f"overhead {row['overhead']:.2f}x; 10% with --ordering none "
                f"{row['fail_10_unordered']['seconds_steady']:.2f}s, per-key order costs {row['ordering_cost']:.2f}x"
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
            "fail_10_unordered_seconds": median(run["fail_10_unordered"]["seconds_steady"] for run in runs),
            "ordering_cost": median(run["ordering_cost"] for run in runs),
            "retried": median(run["fail_10"]["outcomes"]["retried"] for run in runs),
            "consumer_peak_rss_kib": max(
                run[key]["consumer_rss_kib"] for run in runs for key in ("fail_0", "fail_10", "fail_10_unordered")
            ),
            "scheduler_peak_rss_kib": max(run[key]["scheduler_rss_kib"] for run in runs for key in ("fail_0", "fail_10")),
        }
        self.write_results()

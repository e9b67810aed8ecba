# bench_retry.py - phase "retry" of the benchmark: retry timing as a user sees it. Notes that fail
# once at a webhook come back after the tier's delay; how much later than that is measured at
# the receiver (a trickle through a 1 s tier, a burst of 100 through a 500 ms tier).

import os
import subprocess
import threading
import time

from common import RECORD_DELIMITER, KEY_DELIMITER, KCAT_PRODUCER_SETTINGS, log, BenchError, percentile, median, free_port


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
            # Keep-alive, as real webhooks answer: a connection per request would measure
            # connection set-up rather than retry timing.
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (the standard library's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                # One entry per note version: the dataset holds several versions of some notes.
                note_id = self.headers.get("Idempotency-Key")
                with owner.lock:
                    now_ms = time.time() * 1000
                    first = note_id not in owner.failed_at_ms
                    # The failure's time is taken before the answer is sent: taken after, a
                    # client that retries at once could be seen back before it had failed.
                    if first:
                        owner.failed_at_ms[note_id] = now_ms
                    elif note_id not in owner.reapplied_at_ms:
                        owner.reapplied_at_ms[note_id] = now_ms
                self.send_response(503 if first else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            # The standard library's listen backlog is 5: a burst of 16 concurrent connections
            # overflows it, and the dropped SYNs are retried by the kernel after 1 s, then 3 s,
            # which the first version of this measurement reported as retry lateness.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
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


class RetryPhase:
    """Retry timing at the webhook; a mixin of harness.Bench."""

    def retry_timing_run(self, label, count, tier_ms, rate, rep, engine="rebound"):
        """One shape's run; `engine` "spring" measures the Spring peer (bench_peer.py) through the
        same receiver instead of rebound-consumer and rebound-scheduler."""
        prefix = f"{self.run_id}-{label}-{rep}."
        self.create_topics(prefix, ["notes"], ["retry-5s", "retry-1m"])
        receiver = FailOnceReceiver()
        services = []
        if engine == "spring":
            port = free_port()
            spring = self.children.spawn(
                self.next_name(f"spring-{label}"),
                self.spring_command(prefix, f"{prefix}spring", port, delay_ms=tier_ms, failure_rate=0.0, seed=rep + 1,
                                    sink=receiver.url),
                stdout="log",
            )
            services.append(("spring", spring, port))
        else:
            tiers = ["--tier", f"retry-5s:{tier_ms}ms", "--tier", f"retry-1m:{tier_ms}ms"]
            scheduler_port = free_port()
            scheduler = self.children.spawn(
                self.next_name(f"scheduler-{label}"),
                [os.path.join(self.bin, "rebound-scheduler"), "--brokers", self.brokers, "--topic-prefix", prefix,
                 "--group", f"{prefix}scheduler", *tiers, "--metrics-listen", f"127.0.0.1:{scheduler_port}"],
            )
            services.append(("scheduler", scheduler, scheduler_port))
            consumer_port = free_port()
            consumer = self.children.spawn(
                self.next_name(f"consumer-{label}"),
                # Every note fails once here, by design of the shape: to the circuit breaker that
                # is an outage, and it would hold records until a probe succeeds, measuring the
                # breaker rather than the tiers. The peer has no breaker; like for like, it is off.
                self.consumer_command(
                    prefix, "notes", f"{prefix}consumer", receiver.url, consumer_port,
                    extra=[*tiers, "--breaker", "off"],
                ),
            )
            services.append(("consumer", consumer, consumer_port))
        rss = {}
        try:
            # The JVM of the Spring peer takes seconds to start on a busy machine.
            for _, process, port in services:
                self.wait_ready(process, port, timeout=120)
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
            for service, process, _ in reversed(services):
                rss[service] = self.children.stop(process)[1]
            receiver.close()
        beyond = receiver.lateness_beyond_ms(tier_ms)
        return {
            "count": count, "tier_ms": tier_ms, "rate": rate, "rss_kib": rss,
            "beyond_ms_p50": percentile(beyond, 0.50),
            "beyond_ms_p99": percentile(beyond, 0.99),
            "beyond_ms_max": max(beyond),
            "beyond_ms_min": min(beyond),
        }

    # The two shapes every retry timing measurement uses, the "peer" phase's included.
    RETRY_SHAPES = {
        # A trickle: one failing note every 200 ms on a 1 s tier.
        "trickle": {"count": 30, "tier_ms": 1000, "rate": 5},
        # A burst: 100 failing notes at once on a 500 ms tier.
        "burst": {"count": 100, "tier_ms": 500, "rate": 0},
    }

    def bench_retry_timing(self):
        summary = {}
        for shape, params in self.RETRY_SHAPES.items():
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

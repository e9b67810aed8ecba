# bench_peer.py - phase "peer" of the benchmark: rebound against Spring for Apache Kafka's
# @RetryableTopic (scripts/bench/spring/, built by scripts/bench/spring-peer.sh) on the same
# broker and records, each figure of one repetition taken one right after the other:
#   - happy path: rebound-consumer (null sink) and the peer (in-memory sink) reading the same
#     pre-filled topic of small notes, with kcat -C on it as the reference;
#   - failure path: both with 10% transient failures per attempt and short tiers (rebound's
#     scheduler with 0 s tiers, the peer's two retry topics with a 0 ms fixed back-off), on
#     fewer notes (--peer-failure-count), since the peer's failure path is slow;
#   - retry timing: both behind the failing-once webhook of the "retry" phase, the same two
#     shapes (a trickle on a 1 s tier, a burst on a 500 ms tier), lateness beyond the delay.

from common import BenchError, log, median, free_port

SPRING_COUNTER = "spring_peer_records_total"


class PeerPhase:
    """rebound against the Spring Kafka peer; a mixin of harness.Bench."""

    def spring_command(self, prefix, group, port, delay_ms, failure_rate, seed, sink="memory"):
        if not self.args.spring_jar:
            raise BenchError("the peer phase needs --spring-jar (scripts/bench.sh builds it)")
        return [
            "java", *self.args.spring_java_opts.split(), "-jar", self.args.spring_jar,
            f"--spring.kafka.bootstrap-servers={self.brokers}", f"--peer.topic={prefix}notes",
            f"--peer.group={group}", f"--peer.delay-ms={delay_ms}", f"--peer.failure-rate={failure_rate}",
            f"--peer.seed={seed}", f"--peer.sink={sink}", f"--peer.metrics-port={port}",
            f"--peer.partitions={self.args.partitions}",
        ]

    def peer_count(self, transient):
        # The peer's failure path runs at tens to hundreds of notes per second (see
        # docs/performance.md), so it gets its own, smaller count.
        return self.args.peer_failure_count if transient else self.args.peer_count

    def spring_failure_run(self, transient, rep):
        count = self.peer_count(transient)
        label = f"s{rep}-{int(transient * 100)}"
        prefix = f"{self.run_id}-{label}."
        self.create_topics(prefix, ["notes"], ["retry-5s", "retry-1m"])
        self.produce_with_kcat(self.next_name(f"fill-{label}"), prefix + "notes", self.datasets["small"]["kcat"], limit=count)
        result = {}
        if transient == 0.0:
            # The reference: kcat reading the same topic, in the same repetition.
            result["kcat"] = self.kcat_consume(self.next_name(f"kcat-{label}"), prefix + "notes", count)
        port = free_port()
        spring = self.children.spawn(
            self.next_name(f"spring-{label}"),
            self.spring_command(prefix, f"{prefix}spring", port, delay_ms=0, failure_rate=transient, seed=rep + 1),
            stdout="log",
        )
        result.update(self.watch_consumer(
            spring, port, count,
            lambda outcomes: outcomes["applied"] + outcomes["dead_lettered"] >= count,
            timeout=900, counter=SPRING_COUNTER,
        ))
        code, rss = self.children.stop(spring)
        result.update(rss_kib=rss, exit_code=code, transient=transient)
        return result

    def bench_peer(self):
        if max(self.args.peer_count, self.args.peer_failure_count) > self.args.small_count:
            raise BenchError(f"the peer phase's counts ({self.args.peer_count}, {self.args.peer_failure_count}) "
                             f"exceed the {self.args.small_count} small notes generated (BENCH_SMALL_COUNT)")
        runs = []
        for rep in range(self.args.runs):
            row = {"rep": rep}
            # Alternate who goes first, so a slow stretch of the shared machine hits both sides.
            engines = ("rebound", "spring") if rep % 2 == 0 else ("spring", "rebound")
            for transient in (0.0, 0.1):
                key = "fail_10" if transient else "fail_0"
                for engine in engines:
                    if engine == "spring":
                        row[f"spring_{key}"] = self.spring_failure_run(transient, rep)
                    else:
                        row[f"rebound_{key}"] = self.failure_run(transient, rep, count=self.peer_count(transient),
                                                                 label_prefix="p")
            for shape, params in self.RETRY_SHAPES.items():
                for engine in engines:
                    row[f"{engine}_{shape}"] = self.retry_timing_run(f"peer-{engine}-{shape}", rep=rep, engine=engine,
                                                                     **params)
            for engine in ("rebound", "spring"):
                # Per note, since the two paths run different counts.
                row[f"{engine}_overhead"] = row[f"{engine}_fail_0"]["notes_per_s"] / row[f"{engine}_fail_10"]["notes_per_s"]
            kcat = row["spring_fail_0"]["kcat"]["notes_per_s"]
            row["happy_vs_spring"] = row["rebound_fail_0"]["notes_per_s"] / row["spring_fail_0"]["notes_per_s"]
            row["failure_vs_spring"] = row["rebound_fail_10"]["notes_per_s"] / row["spring_fail_10"]["notes_per_s"]
            row["rebound_happy_vs_kcat"] = row["rebound_fail_0"]["notes_per_s"] / kcat
            row["spring_happy_vs_kcat"] = row["spring_fail_0"]["notes_per_s"] / kcat
            log(
                f"peer rep {rep}: happy path rebound {row['rebound_fail_0']['notes_per_s']:.0f}/s, "
                f"Spring {row['spring_fail_0']['notes_per_s']:.0f}/s, kcat -C {kcat:.0f}/s; 10% failures rebound "
                f"{row['rebound_fail_10']['notes_per_s']:.0f}/s, Spring {row['spring_fail_10']['notes_per_s']:.0f}/s; "
                + "; ".join(
                    f"{shape} p99 beyond the delay rebound {row[f'rebound_{shape}']['beyond_ms_p99']:.0f} ms, "
                    f"Spring {row[f'spring_{shape}']['beyond_ms_p99']:.0f} ms"
                    for shape in self.RETRY_SHAPES
                )
            )
            runs.append(row)
            self.results["runs"]["peer"] = runs
            self.write_results()
        summary = {
            "notes": self.args.peer_count,
            "failure_notes": self.args.peer_failure_count,
            "spring_java_opts": self.args.spring_java_opts,
            "kcat_notes_per_s": median(run["spring_fail_0"]["kcat"]["notes_per_s"] for run in runs),
            "happy_vs_spring": median(run["happy_vs_spring"] for run in runs),
            "failure_vs_spring": median(run["failure_vs_spring"] for run in runs),
            "rebound_happy_vs_kcat": median(run["rebound_happy_vs_kcat"] for run in runs),
            "spring_happy_vs_kcat": median(run["spring_happy_vs_kcat"] for run in runs),
        }
        for engine in ("rebound", "spring"):
            summary[f"{engine}_happy_notes_per_s"] = median(run[f"{engine}_fail_0"]["notes_per_s"] for run in runs)
            summary[f"{engine}_failure_notes_per_s"] = median(run[f"{engine}_fail_10"]["notes_per_s"] for run in runs)
            summary[f"{engine}_overhead"] = median(run[f"{engine}_overhead"] for run in runs)
            for shape in self.RETRY_SHAPES:
                for figure in ("p50", "p99"):
                    summary[f"{engine}_{shape}_beyond_ms_{figure}"] = median(
                        run[f"{engine}_{shape}"][f"beyond_ms_{figure}"] for run in runs)
                summary[f"{engine}_{shape}_beyond_ms_max"] = max(run[f"{engine}_{shape}"]["beyond_ms_max"] for run in runs)
                summary[f"{engine}_{shape}_beyond_ms_min"] = min(run[f"{engine}_{shape}"]["beyond_ms_min"] for run in runs)
        summary["spring_peak_rss_kib"] = max(
            [run[f"spring_{key}"]["rss_kib"] for run in runs for key in ("fail_0", "fail_10")]
            + [run[f"spring_{shape}"]["rss_kib"]["spring"] for run in runs for shape in self.RETRY_SHAPES])
        summary["rebound_consumer_peak_rss_kib"] = max(
            [run[f"rebound_{key}"]["consumer_rss_kib"] for run in runs for key in ("fail_0", "fail_10")]
            + [run[f"rebound_{shape}"]["rss_kib"]["consumer"] for run in runs for shape in self.RETRY_SHAPES])
        summary["rebound_scheduler_peak_rss_kib"] = max(
            [run[f"rebound_{key}"]["scheduler_rss_kib"] for run in runs for key in ("fail_0", "fail_10")]
            + [run[f"rebound_{shape}"]["rss_kib"]["scheduler"] for run in runs for shape in self.RETRY_SHAPES])
        self.results["summary"]["peer"] = summary
        self.write_results()

# bench_producer.py - phase 1 of the benchmark: rebound-producer (outbox off, durable outbox)
# against kcat writing the same records, small and large notes.

import os
import shutil
import time

from common import log, BenchError, median


class ProducerPhase:
    """Producer throughput; a mixin of harness.Bench."""

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

# bench_consumer.py - phase 2 of the benchmark: rebound-consumer's happy path (null, SQLite and,
# with --postgres-url, PostgreSQL sinks) against kcat reading the same topic.

import os
import subprocess
import time

from common import log, BenchError, median, free_port


class ConsumerPhase:
    """Consumer throughput; a mixin of harness.Bench."""

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

    def consumer_run(self, size, variant, rep, source_topic):
        expected = self.datasets[size]["count"]
        name = self.next_name(f"consumer-{size}-{variant}-{rep}")
        if variant == "kcat":
            return self.kcat_consume(name, self.prefix + source_topic, expected)
        port = free_port()
        sink = "null://"
        if variant == "sqlite":
            sink = "sqlite://" + os.path.join(self.work_dir, f"{name}.db")
        if variant == "postgres":
            # A database per run, so every run starts from an empty table as SQLite's does.
            database = name.replace("-", "_").lower()
            self.postgres_sql(f'CREATE DATABASE "{database}"')
            sink = postgres_url_with_database(self.args.postgres_url, database)
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
        if variant == "postgres":
            self.postgres_sql(f'DROP DATABASE IF EXISTS "{database}"')
        if variant == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                path = os.path.join(self.work_dir, f"{name}.db{suffix}")
                if os.path.exists(path):
                    os.remove(path)
        return result

    def postgres_sql(self, statement):
        # psql, not a Python driver: the benchmark needs no package beyond the standard library.
        subprocess.run(["psql", self.args.postgres_url, "-q", "-v", "ON_ERROR_STOP=1", "-c", statement],
                       check=True, stdout=subprocess.DEVNULL)

    def bench_consumer(self):
        variants = ["kcat", "null", "sqlite"]
        if self.args.postgres_url:
            variants.append("postgres")
        for size in ("small", "large"):
            # kcat wrote this topic; the consumer decoding all of it without a dead letter is a
            # second check that the payloads are what the Rust codec writes.
            source_topic = f"prod-{size}-kcat-0"
            if self.end_offsets(self.prefix + source_topic) < self.datasets[size]["count"]:
                # The producer phase did not run: fill the topic the same way it would have.
                self.produce_with_kcat(self.next_name(f"fill-{size}"), self.prefix + source_topic, self.datasets[size]["kcat"])
            runs = []
            for rep in range(self.args.runs):
                order = variants[rep % len(variants):] + variants[:rep % len(variants)]
                row = {"rep": rep}
                for variant in order:
                    row[variant] = self.consumer_run(size, variant, rep, source_topic)
                row["null_vs_kcat"] = row["null"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                row["sqlite_vs_kcat"] = row["sqlite"]["notes_per_s"] / row["kcat"]["notes_per_s"]
                message = (
                    f"consumer {size} rep {rep}: kcat -C {row['kcat']['notes_per_s']:.0f}/s, "
                    f"null sink {row['null']['notes_per_s']:.0f}/s, sqlite sink {row['sqlite']['notes_per_s']:.0f}/s"
                )
                if "postgres" in row:
                    row["postgres_vs_null"] = row["postgres"]["notes_per_s"] / row["null"]["notes_per_s"]
                    message += f", postgres sink {row['postgres']['notes_per_s']:.0f}/s"
                log(message)
                runs.append(row)
            self.results["runs"][f"consumer_{size}"] = runs
            summary = {"notes": self.datasets[size]["count"]}
            for variant in variants:
                summary[f"{variant}_notes_per_s"] = median(run[variant]["notes_per_s"] for run in runs)
                summary[f"{variant}_notes_per_s_wall"] = median(run[variant]["notes_per_s_wall"] for run in runs)
                summary[f"{variant}_peak_rss_kib"] = max(run[variant]["rss_kib"] for run in runs)
            summary["null_vs_kcat"] = median(run["null_vs_kcat"] for run in runs)
            summary["sqlite_vs_kcat"] = median(run["sqlite_vs_kcat"] for run in runs)
            if "postgres" in variants:
                summary["postgres_vs_null"] = median(run["postgres_vs_null"] for run in runs)
            self.results["summary"][f"consumer_{size}"] = summary
            self.write_results()


def postgres_url_with_database(url, database):
    """The URL with its database replaced (the query, e.g. sslmode, kept)."""
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    replaced = f"{scheme}://{authority}/{database}"
    return f"{replaced}?{query}" if query else replaced

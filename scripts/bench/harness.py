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
#
# The harness is split by phase: bench_producer.py, bench_intake.py, bench_consumer.py,
# bench_failure.py, bench_scheduler.py, bench_retry.py, bench_delivery.py and bench_peer.py hold
# the measurements, bench_base.py, children.py,
# metrics.py, common.py and report.py the shared plumbing. This file puts them together and is
# the command line.

import argparse
import os
import shutil
import signal
import subprocess
import sys

# The harness's modules live next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_base import BenchBase  # noqa: E402
from bench_consumer import ConsumerPhase  # noqa: E402
from bench_delivery import DeliveryPhase  # noqa: E402
from bench_failure import FailurePhase  # noqa: E402
from bench_intake import IntakePhase  # noqa: E402
from bench_peer import PeerPhase  # noqa: E402
from bench_producer import ProducerPhase  # noqa: E402
from bench_retry import RetryPhase  # noqa: E402
from bench_scheduler import SchedulerPhase  # noqa: E402
from common import BenchError, log  # noqa: E402
from report import compress_large_files  # noqa: E402


class Bench(ProducerPhase, IntakePhase, ConsumerPhase, FailurePhase, SchedulerPhase, RetryPhase, DeliveryPhase,
            PeerPhase, BenchBase):
    """One benchmark run: the phases' measurements on the shared plumbing."""


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
    parser.add_argument("--delivery-count", type=int, default=30000)
    parser.add_argument("--scheduler-rates", type=lambda text: [int(rate) for rate in text.split(",")],
                        default=[1000, 10000, 50000])
    parser.add_argument("--scheduler-seconds", type=float, default=4.0)
    parser.add_argument("--scheduler-delay-ms", type=int, default=2000)
    parser.add_argument("--consumer-extra", default="", help="extra flags of every consumer (experiments)")
    parser.add_argument("--scheduler-extra", default="", help="extra flags of the timed scheduler (experiments)")
    parser.add_argument("--phases", default="producer,intake,consumer,failure,scheduler,retry,delivery,peer")
    parser.add_argument("--peer-count", type=int, default=50000, help="notes per happy-path run of the peer phase")
    parser.add_argument("--peer-failure-count", type=int, default=5000,
                        help="notes per failure-path run of the peer phase")
    parser.add_argument("--spring-jar", default="", help="the Spring peer's jar (scripts/bench/spring-peer.sh)")
    parser.add_argument("--spring-java-opts", default="", help="JVM options of the Spring peer")
    parser.add_argument("--postgres-url", default="",
                        help="a PostgreSQL server for the consumer phase's PostgreSQL sink (none: not measured)")
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

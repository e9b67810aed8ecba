# common.py - what every part of the benchmark harness (scripts/bench/harness.py) shares: the
# kcat input format and settings, logging, the error type, and small statistics helpers.

import math
import socket
import statistics
import sys


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


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step failed; the message says which and where its log is."""


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

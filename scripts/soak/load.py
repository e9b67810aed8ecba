#!/usr/bin/env python3
# load.py - the load client of scripts/soak.sh: posts note versions to `rebound-producer serve`
# and logs every version the producer accepted.
#
# Usage: scripts/soak/load.py --url http://127.0.0.1:PORT/v1/notes --versions N --notes M \
#            --ids-log FILE [--batch 200] [--threads 2] [--rate 0] [--seed 1] [--deadline 600] \
#            [--summary FILE]
#
# Version g (0 <= g < N) is note `soak-<g % M>` at version `g // M + 1`, so every note's versions
# increase. Each thread owns a fixed share of the notes and sends its share in that order, one
# batch (a JSON array) at a time, so versions of one note are offered in increasing order. A
# batch is retried, unchanged, until the producer answers 202: on connection errors and timeouts
# (the producer is being killed and restarted), on 503 (outbox full) and on other 5xx. A 202
# means the batch is durable in the outbox, and only then are its versions appended to the
# accepted-ids log, one `NOTE_ID<TAB>VERSION` line each, as `rebound audit` reads it. A 4xx is a
# bug in this client or the producer and ends the run with status 2. Past --deadline seconds the
# run ends with status 1; whatever was logged until then was accepted.
#
# On exit a JSON summary (versions accepted, requests, retries by cause, seconds) is printed on
# stdout and written to --summary.

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

WORDS = ["meeting", "groceries", "idea", "draft", "call", "plan", "book", "trip", "budget",
         "recipe", "café", "naïve", "日本語", "Grüße", "todo", "review", "garden", "invoice"]


class Shared:
    """State the threads share: the ids log, counters and the first fatal error."""

    def __init__(self, ids_log):
        self.lock = threading.Lock()
        self.ids = open(ids_log, "a", encoding="utf-8")
        self.accepted = 0
        self.requests = 0
        self.retries = {"connection": 0, "503": 0, "5xx": 0}
        self.fatal = None

    def log_accepted(self, accepted):
        lines = "".join(f"{item['note_id']}\t{item['version']}\n" for item in accepted)
        with self.lock:
            self.ids.write(lines)
            self.ids.flush()
            self.accepted += len(accepted)

    def count(self, what):
        with self.lock:
            if what == "request":
                self.requests += 1
            else:
                self.retries[what] += 1


def note(index, version, rng, thread):
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))
    return {
        "note_id": f"soak-{index}",
        "user_id": f"u-{index % 97}",
        "device_id": f"d-{thread}",
        "version": version,
        "title": f"{rng.choice(WORDS)} {version}",
        "body": words,
        "tags": rng.sample(WORDS, rng.randint(0, 3)),
        "updated_at": int(time.time() * 1000),
        "deleted": rng.random() < 0.02,
        "pinned": rng.random() < 0.1,
    }


def versions_of(thread, threads, versions, notes):
    """The (note index, version) pairs of one thread, in sending order."""
    for g in range(versions):
        index = g % notes
        if index % threads == thread:
            yield index, g // notes + 1


def post_until_accepted(url, body, shared, deadline):
    backoff = 0.05
    while True:
        if time.monotonic() >= deadline:
            raise TimeoutError("deadline passed before the producer accepted a batch")
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        cause = None
        try:
            shared.count("request")
            connection.request("POST", url.path, body=body,
                               headers={"content-type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status == 202:
                return json.loads(payload)
            if response.status == 503:
                cause = "503"
            elif response.status >= 500:
                cause = "5xx"
            else:
                raise RuntimeError(f"producer answered {response.status}: {payload[:300]!r}")
        except (OSError, http.client.HTTPException):
            # Refused, reset, timed out, or cut short: the producer is down or restarting. Whether
            # the batch was committed is unknown, so it is sent again; a version accepted twice
            # is a duplicate, which the sink's version rule absorbs.
            cause = "connection"
        finally:
            connection.close()
        shared.count(cause)
        time.sleep(backoff)
        backoff = min(backoff * 2, 1.0)


def run_thread(thread, args, shared, deadline, started):
    try:
        url = urllib.parse.urlsplit(args.url)
        rng = random.Random(args.seed * 1000 + thread)
        per_thread_rate = args.rate / args.threads if args.rate > 0 else 0
        sent = 0
        batch = []
        pairs = versions_of(thread, args.threads, args.versions, args.notes)
        while True:
            pair = next(pairs, None)
            if pair is not None:
                batch.append(note(pair[0], pair[1], rng, thread))
            if batch and (len(batch) >= args.batch or pair is None):
                if per_thread_rate:
                    # Paced: the batch goes out when the schedule says it is due.
                    due = started + sent / per_thread_rate
                    time.sleep(max(0.0, due - time.monotonic()))
                reply = post_until_accepted(url, json.dumps(batch).encode(), shared, deadline)
                accepted = reply.get("accepted", [])
                if len(accepted) != len(batch):
                    raise RuntimeError(f"sent {len(batch)} notes, producer accepted {len(accepted)}")
                shared.log_accepted(accepted)
                sent += len(batch)
                batch = []
            if pair is None:
                return
    except Exception as error:  # noqa: BLE001 - any failure ends the run, reported once
        with shared.lock:
            if shared.fatal is None:
                shared.fatal = error


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--notes", type=int, required=True)
    parser.add_argument("--ids-log", required=True)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0, help="versions per second, 0: unpaced")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=600, help="seconds")
    parser.add_argument("--summary")
    args = parser.parse_args()
    if args.versions < 1 or args.notes < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--versions, --notes, --batch and --threads must be at least 1")

    shared = Shared(args.ids_log)
    started = time.monotonic()
    deadline = started + args.deadline
    threads = [threading.Thread(target=run_thread, args=(t, args, shared, deadline, started), daemon=True)
               for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.ids.close()
    summary = {
        "accepted": shared.accepted,
        "requests": shared.requests,
        "retries": shared.retries,
        "seconds": round(time.monotonic() - started, 1),
        "error": None if shared.fatal is None else str(shared.fatal),
    }
    text = json.dumps(summary)
    print(text, flush=True)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    if shared.fatal is not None:
        print(f"load: error: {shared.fatal}", file=sys.stderr)
        return 1 if isinstance(shared.fatal, TimeoutError) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

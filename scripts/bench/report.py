# report.py - the benchmark's report: the machine it ran on, results.md rendered from the
# results.json figures, and compressing large logs at the end.

import gzip
import os
import platform
import shutil
import subprocess


def machine(repo):
    """The machine, tools and versions a run measured on, for results.json and results.md."""
    def read(path):
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""

    model = next(
        (line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    mem_kib = next(
        (int(line.split()[1]) for line in read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), 0
    )
    kcat = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False).stdout
    kcat_version = next((line.strip() for line in kcat.splitlines() if line.startswith("Version")), "")
    # "Version 1.7.1 (JSON, ..., librdkafka 2.0.2 builtin.features=...)" -> "1.7.1, librdkafka 2.0.2"
    words = kcat_version.replace("(", " ").replace(")", " ").replace(",", " ").split()
    if len(words) > 1:
        librdkafka = next((words[i + 1] for i, word in enumerate(words[:-1]) if word == "librdkafka"), "?")
        kcat_version = f"{words[1]}, librdkafka {librdkafka}"
    # rebound links the librdkafka that rdkafka-sys bundles: "4.10.0+2.12.1" -> "2.12.1".
    lock = read(os.path.join(repo, "Cargo.lock"))
    rebound_librdkafka = "?"
    if 'name = "rdkafka-sys"' in lock:
        version_line = lock.split('name = "rdkafka-sys"', 1)[1].split("\n")[1]
        rebound_librdkafka = version_line.split('"')[1].split("+")[-1]
    kafka_version = ""
    pom = read(os.path.join(repo, "scripts", "kafka", "pom.xml"))
    if "<kafka.version>" in pom:
        kafka_version = pom.split("<kafka.version>", 1)[1].split("<", 1)[0]
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "kcat": kcat_version,
        "rebound_librdkafka": rebound_librdkafka,
        "kafka": f"Apache Kafka {kafka_version} (scripts/kafka-local.sh), single broker" if kafka_version else "",
        "python": platform.python_version(),
    }


def fmt_rate(value):
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_mib(kib):
    return "n/a" if not kib else f"{kib / 1024:.1f}"


def verdict(ok):
    return "met" if ok else "**missed**"


def render_markdown(results):
    summary = results["summary"]
    lines = [f"Run `{results.get('run_id', '')}`, {results.get('started_at', '')}, "
             f"{results.get('seconds', '?')} s of measurements.", ""]
    machine = results.get("machine", {})
    if machine:
        lines.append(
            f"Machine: {machine.get('cpu')}, {machine.get('cpus')} CPUs, {machine.get('memory_gib')} GiB RAM, "
            f"Linux {machine.get('kernel')}; {machine.get('kafka')}; kcat {machine.get('kcat')}; "
            f"rebound with librdkafka {machine.get('rebound_librdkafka')}."
        )
        lines.append("")
    lines += ["| measurement | rebound | kcat | ratio | target | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for size in ("small", "large"):
        producer = summary.get(f"producer_{size}")
        if producer:
            label = f"{size} notes ({producer['mean_record_bytes']:.0f} B, {producer['notes']:,})"
            lines.append(
                f"| producer, outbox off, {label} | {fmt_rate(producer['send_direct_notes_per_s'])}/s | "
                f"{fmt_rate(producer['kcat_notes_per_s'])}/s | {fmt_ratio(producer['direct_vs_kcat'])} | >= 1.0x | "
                f"{verdict(producer['direct_vs_kcat'] >= 1.0)} |"
            )
            lines.append(
                f"| producer, durable outbox, {label} | {fmt_rate(producer['send_outbox_notes_per_s'])}/s | "
                f"{fmt_rate(producer['kcat_notes_per_s'])}/s | {fmt_ratio(producer['outbox_vs_kcat'])} | >= 0.8x | "
                f"{verdict(producer['outbox_vs_kcat'] >= 0.8)} |"
            )
    for size in ("small", "large"):
        consumer = summary.get(f"consumer_{size}")
        if consumer:
            label = f"{size} notes ({consumer['notes']:,})"
            lines.append(
                f"| consumer, null sink, {label} | {fmt_rate(consumer['null_notes_per_s'])}/s | "
                f"{fmt_rate(consumer['kcat_notes_per_s'])}/s | {fmt_ratio(consumer['null_vs_kcat'])} | >= 0.9x | "
                f"{verdict(consumer['null_vs_kcat'] >= 0.9)} |"
            )
            lines.append(
                f"| consumer, SQLite sink, {label} | {fmt_rate(consumer['sqlite_notes_per_s'])}/s | "
                f"{fmt_rate(consumer['kcat_notes_per_s'])}/s | {fmt_ratio(consumer['sqlite_vs_kcat'])} | "
                f">= 150,000/s | {verdict(consumer['sqlite_notes_per_s'] >= 150000)} |"
            )
            if "postgres_notes_per_s" in consumer:
                # Compared with the null sink: what the database costs, the rest being equal.
                lines.append(
                    f"| consumer, PostgreSQL sink, {label} | {fmt_rate(consumer['postgres_notes_per_s'])}/s | "
                    f"{fmt_rate(consumer['null_notes_per_s'])}/s (null sink) | "
                    f"{fmt_ratio(consumer['postgres_vs_null'])} | | measured |"
                )
    for connections in (64, 16):
        intake = summary.get(f"intake_{connections}")
        if intake:
            target = ">= 25,000/s, " if connections == 64 else ""
            ok = intake["notes_per_s"] >= 25000 if connections == 64 else True
            lines.append(
                f"| HTTP intake, durable outbox, one note per request, {connections} connections (wrk) | "
                f"{fmt_rate(intake['notes_per_s'])}/s, p50 {intake['latency_ms_p50']:.1f} ms, "
                f"p99 {intake['latency_ms_p99']:.1f} ms | | | {target}p99 reported | "
                f"{verdict(ok and intake['refused'] == 0)} |"
            )
    failure = summary.get("failure")
    if failure:
        lines.append(
            f"| failure path, {failure['notes']:,} small notes, 10% vs 0% transient | "
            f"{failure['fail_10_seconds']:.2f} s vs {failure['fail_0_seconds']:.2f} s | | "
            f"{fmt_ratio(failure['overhead'])} | <= 1.15x | {verdict(failure['overhead'] <= 1.15)} |"
        )
        if "ordering_cost" in failure:
            lines.append(
                f"| failure path, 10% transient, --ordering key vs none | "
                f"{failure['fail_10_seconds']:.2f} s vs {failure['fail_10_unordered_seconds']:.2f} s | | "
                f"{fmt_ratio(failure['ordering_cost'])} | measured | |"
            )
    delivery = summary.get("delivery")
    if delivery:
        lines.append(
            f"| failure path, {delivery['notes']:,} small notes, 10% transient, exactly-once vs at-least-once | "
            f"{delivery['failure_exactly_once_seconds']:.2f} s vs {delivery['failure_at_least_once_seconds']:.2f} s | | "
            f"{fmt_ratio(delivery['failure_ratio'])} | | measured |"
        )
        lines.append(
            f"| scheduler draining {delivery['notes']:,} due records, exactly-once vs at-least-once | "
            f"{fmt_rate(delivery['drain_exactly_once_per_s'])}/s vs {fmt_rate(delivery['drain_at_least_once_per_s'])}/s | | "
            f"{fmt_ratio(delivery['drain_ratio'])} | | measured |"
        )
    scheduler = summary.get("scheduler", {})
    for rate, figures in scheduler.items():
        target = ""
        ok = figures["lateness_ms_min_over_runs"] >= 0
        if rate == "10000":
            target = "p99 <= 50 ms, "
            ok = ok and figures["lateness_ms_p99"] <= 50
        lines.append(
            f"| scheduler lateness at {int(rate):,}/s ({fmt_rate(figures['rate_achieved'])}/s reached) | "
            f"p50 {figures['lateness_ms_p50']:.0f} ms, p99 {figures['lateness_ms_p99']:.0f} ms, "
            f"max {figures['lateness_ms_max']:.0f} ms, min {figures['lateness_ms_min_over_runs']:.0f} ms | | | "
            f"{target}never early | {verdict(ok)} |"
        )
    retry_timing = summary.get("retry_timing", {})
    for shape, figures in retry_timing.items():
        what = (f"a trickle of {figures['count']} at {figures['rate']}/s" if figures["rate"]
                else f"a burst of {figures['count']}")
        lines.append(
            f"| retry timing: {what} failing once on a {figures['tier_ms']} ms tier, re-applied beyond the "
            f"delay (at the webhook) | p50 {figures['beyond_ms_p50']:.0f} ms, p99 {figures['beyond_ms_p99']:.0f} ms, "
            f"max {figures['beyond_ms_max']:.0f} ms, min {figures['beyond_ms_min_over_runs']:.0f} ms | | | "
            f"never early; reported | {verdict(figures['beyond_ms_min_over_runs'] >= 0)} |"
        )
    lines += ["", "Peak RSS (MiB, largest over the repetitions; target <= 64 MiB per service):", "",
              "| service and load | peak RSS | verdict |", "| --- | --- | --- |"]
    rss_rows = []
    for size in ("small", "large"):
        producer = summary.get(f"producer_{size}")
        if producer:
            rss_rows.append((f"rebound-producer send, outbox off, {size}", producer["send_direct_peak_rss_kib"]))
            rss_rows.append((f"rebound-producer send, durable outbox, {size}", producer["send_outbox_peak_rss_kib"]))
            rss_rows.append((f"kcat -P (reference), {size}", producer["kcat_peak_rss_kib"]))
    for connections in (64, 16):
        intake = summary.get(f"intake_{connections}")
        if intake:
            rss_rows.append((f"rebound-producer serve, HTTP intake, {connections} connections", intake["peak_rss_kib"]))
    for size in ("small", "large"):
        consumer = summary.get(f"consumer_{size}")
        if consumer:
            rss_rows.append((f"rebound-consumer, null sink, {size}", consumer["null_peak_rss_kib"]))
            rss_rows.append((f"rebound-consumer, SQLite sink, {size}", consumer["sqlite_peak_rss_kib"]))
            if "postgres_peak_rss_kib" in consumer:
                rss_rows.append((f"rebound-consumer, PostgreSQL sink, {size}", consumer["postgres_peak_rss_kib"]))
            rss_rows.append((f"kcat -C (reference), {size}", consumer["kcat_peak_rss_kib"]))
    if failure:
        rss_rows.append(("rebound-consumer, failure path", failure["consumer_peak_rss_kib"]))
        rss_rows.append(("rebound-scheduler, failure path (0 s tiers)", failure["scheduler_peak_rss_kib"]))
    for rate, figures in scheduler.items():
        rss_rows.append((f"rebound-scheduler, {int(rate):,} records/s", figures["peak_rss_kib"]))
    peer = summary.get("peer")
    if peer:
        rss_rows.append(("rebound-consumer, peer phase", peer["rebound_consumer_peak_rss_kib"]))
        rss_rows.append(("rebound-scheduler, peer phase", peer["rebound_scheduler_peak_rss_kib"]))
        rss_rows.append((f"Spring Kafka peer ({peer['spring_java_opts'] or 'JVM defaults'}) (reference)",
                         peer["spring_peak_rss_kib"]))
    for label, kib in rss_rows:
        reference = "reference" in label
        lines.append(f"| {label} | {fmt_mib(kib)} | {'' if reference else verdict(kib <= 64 * 1024)} |")
    lines.append("")
    if peer:
        lines += render_peer(peer)
    return "\n".join(lines)


def render_peer(peer):
    """The "peer" phase's table: rebound beside Spring Kafka's @RetryableTopic, same run."""
    lines = [f"Against Spring for Apache Kafka's `@RetryableTopic` (two retry topics, fixed back-off, a DLT; "
             f"{peer['notes']:,} small notes per happy-path run, {peer['failure_notes']:,} per failure-path run; "
             f"ratio = rebound / Spring; target: rebound ahead):",
             "", "| measurement | rebound | Spring Kafka | ratio | verdict |", "| --- | --- | --- | --- | --- |"]
    happy_ok = peer["happy_vs_spring"] > 1.0
    failure_ok = peer["failure_vs_spring"] > 1.0
    lines.append(
        f"| happy path, notes/s (kcat -C {fmt_rate(peer['kcat_notes_per_s'])}/s) | "
        f"{fmt_rate(peer['rebound_happy_notes_per_s'])} ({fmt_ratio(peer['rebound_happy_vs_kcat'])} kcat) | "
        f"{fmt_rate(peer['spring_happy_notes_per_s'])} ({fmt_ratio(peer['spring_happy_vs_kcat'])} kcat) | "
        f"{fmt_ratio(peer['happy_vs_spring'])} | {verdict(happy_ok)} |"
    )
    lines.append(
        f"| 10% transient failures, short tiers, notes/s | {fmt_rate(peer['rebound_failure_notes_per_s'])} | "
        f"{fmt_rate(peer['spring_failure_notes_per_s'])} | {fmt_ratio(peer['failure_vs_spring'])} | {verdict(failure_ok)} |"
    )
    lines.append(
        f"| failure path time / happy path time, per note | {fmt_ratio(peer['rebound_overhead'])} | "
        f"{fmt_ratio(peer['spring_overhead'])} | | |"
    )
    for shape in ("trickle", "burst"):
        if f"rebound_{shape}_beyond_ms_p99" not in peer:
            continue
        rebound_p99, spring_p99 = peer[f"rebound_{shape}_beyond_ms_p99"], peer[f"spring_{shape}_beyond_ms_p99"]
        lines.append(
            f"| retry lateness beyond the delay, {shape} (p50 / p99 / max) | "
            f"{peer[f'rebound_{shape}_beyond_ms_p50']:.0f} / {rebound_p99:.0f} / "
            f"{peer[f'rebound_{shape}_beyond_ms_max']:.0f} ms | "
            f"{peer[f'spring_{shape}_beyond_ms_p50']:.0f} / {spring_p99:.0f} / "
            f"{peer[f'spring_{shape}_beyond_ms_max']:.0f} ms | | "
            f"{verdict(rebound_p99 < spring_p99 and peer[f'rebound_{shape}_beyond_ms_min'] >= 0)} |"
        )
    lines.append("")
    return lines


def source_commit(repo):
    """The commit measured: `git describe`-like short hash, with "+changes" when the work tree
    differed from it (the row then measures something no commit holds)."""
    def git(*arguments):
        done = subprocess.run(["git", "-C", repo, *arguments], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=7", "HEAD") or "?"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


# The history table's columns: a heading and how to read the figure from the summary.
HISTORY_COLUMNS = [
    ("producer/kcat small", lambda s: fmt_ratio(s["producer_small"]["direct_vs_kcat"])),
    ("outbox/kcat small", lambda s: fmt_ratio(s["producer_small"]["outbox_vs_kcat"])),
    ("null sink/kcat small", lambda s: fmt_ratio(s["consumer_small"]["null_vs_kcat"])),
    ("null sink/kcat large", lambda s: fmt_ratio(s["consumer_large"]["null_vs_kcat"])),
    ("SQLite small/s", lambda s: fmt_rate(s["consumer_small"]["sqlite_notes_per_s"])),
    ("failure path", lambda s: fmt_ratio(s["failure"]["overhead"])),
    ("scheduler p99 @10k", lambda s: f"{s['scheduler']['10000']['lateness_ms_p99']:.0f} ms"),
    ("retry burst p99", lambda s: f"{s['retry_timing']['burst']['beyond_ms_p99']:.0f} ms"),
    ("vs Spring happy", lambda s: fmt_ratio(s["peer"]["happy_vs_spring"])),
    ("vs Spring 10%", lambda s: fmt_ratio(s["peer"]["failure_vs_spring"])),
    ("retry p99 trickle/burst, rebound vs Spring", lambda s: (
        f"{s['peer']['rebound_trickle_beyond_ms_p99']:.0f}/{s['peer']['rebound_burst_beyond_ms_p99']:.0f} vs "
        f"{s['peer']['spring_trickle_beyond_ms_p99']:.0f}/{s['peer']['spring_burst_beyond_ms_p99']:.0f} ms")),
    ("largest rebound peak RSS", lambda s: f"{fmt_mib(largest_rebound_rss_kib(s))} MiB"),
]


def largest_rebound_rss_kib(summary):
    """The largest peak RSS of any rebound service in the run (the references left out)."""
    peaks = [
        value
        for phase in summary.values() if isinstance(phase, dict)
        for figures in [phase, *[value for value in phase.values() if isinstance(value, dict)]]
        for key, value in figures.items()
        if key.endswith("peak_rss_kib") and not key.startswith(("kcat", "spring"))
    ]
    if not peaks:
        raise KeyError("no peak RSS")
    return max(peaks)


def history_header():
    headings = ["date", "commit", "runs"] + [heading for heading, _ in HISTORY_COLUMNS]
    return ["| " + " | ".join(headings) + " |", "|" + " --- |" * len(headings)]


def history_row(results):
    """One row of docs/performance.md's history table: the run's date, commit and figures
    ("-" for a phase the run left out)."""
    summary = results["summary"]
    cells = [results.get("started_at", "?")[:10], f"`{results.get('commit', '?')}`",
             str(results.get("config", {}).get("runs", "?"))]
    for _, read in HISTORY_COLUMNS:
        try:
            cells.append(read(summary))
        except (KeyError, TypeError):
            cells.append("-")
    return "| " + " | ".join(cells) + " |"


def compress_large_files(directory):
    """Gzips logs and series over 1 MiB once measuring is over: the services log every retry and
    republish, which at 50k records/s is tens of MiB per run."""
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith((".log", ".csv")) and os.path.getsize(path) > (1 << 20):
                with open(path, "rb") as source, gzip.open(path + ".gz", "wb", compresslevel=1) as target:
                    shutil.copyfileobj(source, target)
                os.remove(path)

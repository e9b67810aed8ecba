# metrics.py - reading a rebound service's Prometheus endpoint (/metrics, /readyz) for the
# benchmark harness.

import urllib.error
import urllib.request


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None, ""


def scrape(port):
    """Prometheus samples of a service as {'name{labels}': value}."""
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    samples = {}
    if status != 200:
        return samples
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            samples[series] = float(value)
        except ValueError:
            pass
    return samples


def sum_series(samples, name, *label_fragments):
    return sum(
        value
        for series, value in samples.items()
        if series.startswith(name + "{") and all(fragment in series for fragment in label_fragments)
    )


def consumer_outcomes(samples, total="rebound_consumer_records_total"):
    """Applied, retried and dead-lettered records; `total` is the counter's name (the Spring
    peer of the "peer" phase serves the same labels under its own name)."""
    return {
        "applied": sum_series(samples, total, 'outcome="applied"'),
        "retried": sum_series(samples, total, 'outcome="retried"'),
        "dead_lettered": sum_series(samples, total, 'outcome="dead_lettered"'),
    }

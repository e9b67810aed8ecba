# notes.py - realistic note changes for scripts/bench.sh, written both as the NDJSON that
# `rebound-producer send` reads and as the Avro single-object records it would put on Kafka, so
# kcat can publish byte-for-byte the same payloads.
#
# The Avro writer here covers exactly what schemas/note.avsc uses (strings, longs, a string
# array, booleans); the harness checks its output against a record the Rust codec wrote, so a
# schema change that this file does not follow fails the benchmark instead of skewing it.

import json
import random
import struct

# Words like the ones of rebound-producer's generator, non-ASCII included, so that bodies are
# valid UTF-8 of mixed width as real notes are; the most frequent words of the vocabulary.
WORDS = [
    "meeting", "groceries", "idea", "draft", "call", "plan", "book", "trip", "budget", "recipe",
    "café", "naïve", "résumé", "日本語", "Grüße", "🚀", "todo", "review", "garden", "invoice",
    "renewal", "piano", "München", "über", "the", "and", "tomorrow", "before", "friday", "list",
]
# Real notes draw on thousands of words, most of them rare; a few dozen words repeated would
# compress several times better than text does and flatter every lz4-compressed figure. So the
# vocabulary is WORDS plus seeded pseudo-words, picked with Zipf-like frequencies.
_SYLLABLE_ONSETS = ["", "b", "br", "c", "ch", "d", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pr",
                    "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "y", "z"]
_SYLLABLE_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ou", "oo", "é", "ü", "ö", "å"]
_SYLLABLE_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ck", "st", "ng", "rt", "x"]


def _vocabulary(size=4000, seed=11):
    rng = random.Random(seed)
    words = list(WORDS)
    seen = set(words)
    while len(words) < size:
        word = "".join(
            rng.choice(_SYLLABLE_ONSETS) + rng.choice(_SYLLABLE_VOWELS) + rng.choice(_SYLLABLE_CODAS)
            for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


VOCABULARY = _vocabulary()
_CUMULATIVE_WEIGHTS = []
_total = 0.0
for _rank in range(len(VOCABULARY)):
    _total += 1.0 / (_rank + 1)
    _CUMULATIVE_WEIGHTS.append(_total)

TAGS = ["work", "home", "later", "urgent", "ideas", "travel", "health", "family"]
DEVICES = ["phone", "laptop", "tablet", "web", "watch"]

# Target body length in UTF-8 bytes per size class; the rest of a record (ids, title, tags,
# numbers, the 10-byte single-object header) adds about 70 bytes.
BODY_BYTES = {"small": 215, "large": 4000}

AVRO_EMPTY_FINGERPRINT = 0xC15D213AA4D7A795


def _crc64_avro_table():
    table = []
    for index in range(256):
        fingerprint = index
        for _ in range(8):
            fingerprint = (fingerprint >> 1) ^ (AVRO_EMPTY_FINGERPRINT & -(fingerprint & 1))
        table.append(fingerprint)
    return table


def crc64_avro(data):
    """The CRC-64-AVRO (Rabin) fingerprint of `data`, as an integer."""
    table = _crc64_avro_table()
    fingerprint = AVRO_EMPTY_FINGERPRINT
    for byte in data:
        fingerprint = (fingerprint >> 8) ^ table[(fingerprint ^ byte) & 0xFF]
    return fingerprint


def parsing_canonical_form(schema, namespace=None):
    """The specification's Parsing Canonical Form of the subset of schema JSON that note.avsc
    uses."""
    if isinstance(schema, str):
        return json.dumps(schema)
    if isinstance(schema, list):
        return "[" + ",".join(parsing_canonical_form(branch, namespace) for branch in schema) + "]"
    kind = schema["type"]
    if kind == "record":
        name = schema["name"]
        namespace = schema.get("namespace", namespace)
        full_name = name if "." in name or not namespace else f"{namespace}.{name}"
        fields = ",".join(
            '{"name":' + json.dumps(field["name"]) + ',"type":' + parsing_canonical_form(field["type"], namespace) + "}"
            for field in schema["fields"]
        )
        return '{"name":' + json.dumps(full_name) + ',"type":"record","fields":[' + fields + "]}"
    if kind == "array":
        return '{"type":"array","items":' + parsing_canonical_form(schema["items"], namespace) + "}"
    # A primitive with attributes (a logical type): the specification's canonical form keeps
    # only the underlying type's name ("long"), and rebound writes that standard fingerprint.
    return parsing_canonical_form(kind, namespace)


def single_object_header(schema_path):
    """`C3 01` and the little-endian CRC-64-AVRO fingerprint of the schema's canonical form."""
    with open(schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    canonical = parsing_canonical_form(schema).encode("utf-8")
    return b"\xc3\x01" + struct.pack("<Q", crc64_avro(canonical))


def _long(value):
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(text):
    raw = text.encode("utf-8")
    return _long(len(raw)) + raw


def encode(header, note):
    """The note as a single-object Avro record, fields in schema order."""
    parts = [
        header,
        _string(note["note_id"]),
        _string(note["user_id"]),
        _string(note["device_id"]),
        _long(note["version"]),
        _string(note["title"]),
        _string(note["body"]),
    ]
    if note["tags"]:
        parts.append(_long(len(note["tags"])))
        parts.extend(_string(tag) for tag in note["tags"])
    parts.append(_long(0))
    parts.append(_long(note["updated_at"]))
    parts.append(b"\x01" if note["deleted"] else b"\x00")
    parts.append(b"\x01" if note["pinned"] else b"\x00")
    return b"".join(parts)


def _text(rng, target_bytes):
    words = []
    size = 0
    while size < target_bytes:
        for word in rng.choices(VOCABULARY, cum_weights=_CUMULATIVE_WEIGHTS, k=16):
            words.append(word)
            size += len(word.encode("utf-8")) + 1
            if size >= target_bytes:
                break
    return " ".join(words)


def generate(count, size_class, seed, run_id, base_time_ms):
    """`count` note changes over count/4 notes, versions increasing per note, as dicts."""
    rng = random.Random(seed)
    distinct = max(1, count // 4)
    next_version = [1] * distinct
    body_target = BODY_BYTES[size_class]
    notes = []
    for sequence in range(count):
        index = rng.randrange(distinct)
        version = next_version[index]
        next_version[index] += 1
        notes.append(
            {
                "note_id": f"{run_id}-{size_class[0]}{index:07d}",
                "user_id": f"user-{index % 997:04d}",
                "device_id": rng.choice(DEVICES),
                "version": version,
                "title": _text(rng, rng.randrange(8, 40)),
                "body": _text(rng, int(body_target * rng.uniform(0.9, 1.1))),
                "tags": [rng.choice(TAGS) for _ in range(rng.randrange(0, 4))],
                "updated_at": base_time_ms + sequence,
                "deleted": False,
                "pinned": rng.random() < 0.1,
            }
        )
    return notes

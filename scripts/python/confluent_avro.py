#!/usr/bin/env python3
"""confluent_avro.py - Confluent's own Python client as the independent party of rebound's schema
registry interoperability tests: writes notes with its AvroSerializer (magic byte 0, the schema
id the registry gave, the Avro body) and reads records with its AvroDeserializer.

Usage:
  confluent_avro.py produce --brokers B --topic T --registry-url U --schema FILE --notes JSON
      Serializes each note of the JSON array with the schema in FILE (registered under the topic
      strategy's subject T-value) and produces it with the note id as key; prints the schema id.
  confluent_avro.py consume --brokers B --topic T --registry-url U --count N [--timeout S]
      Reads N records from the start of T with the AvroDeserializer (writer schema fetched from
      the registry by id) and prints each as one JSON line; exit 1 if fewer arrive in time.

Run by the tests with the virtualenv of scripts/python-venv.sh.
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer


def produce(args):
    registry = SchemaRegistryClient({"url": args.registry_url})
    with open(args.schema, encoding="utf-8") as schema_file:
        schema_text = schema_file.read()
    serializer = AvroSerializer(registry, schema_text, conf={"auto.register.schemas": True})
    key_serializer = StringSerializer("utf_8")
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(str(error))

    for note in json.loads(args.notes):
        context = SerializationContext(args.topic, MessageField.VALUE)
        value = serializer(note, context)
        producer.produce(args.topic, key=key_serializer(note["note_id"]), value=value, on_delivery=delivered)
    remaining = producer.flush(60)
    if remaining or failures:
        print(f"not delivered: {remaining} pending, failures {failures}", file=sys.stderr)
        sys.exit(1)
    subject = f"{args.topic}-value"
    print(registry.get_latest_version(subject).schema_id)


def consume(args):
    registry = SchemaRegistryClient({"url": args.registry_url})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"confluent-avro-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    read = 0
    deadline = time.monotonic() + args.timeout
    try:
        while read < args.count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                print(f"consume error: {message.error()}", file=sys.stderr)
                continue
            note = deserializer(message.value(), SerializationContext(args.topic, MessageField.VALUE))
            schema_id = int.from_bytes(message.value()[1:5], "big")
            print(json.dumps({"schema_id": schema_id, "note": note}, default=str), flush=True)
            read += 1
    finally:
        consumer.close()
    if read < args.count:
        print(f"read {read} of {args.count} records within {args.timeout}s", file=sys.stderr)
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("produce", "consume"):
        command = commands.add_parser(name)
        command.add_argument("--brokers", required=True)
        command.add_argument("--topic", required=True)
        command.add_argument("--registry-url", required=True)
    commands.choices["produce"].add_argument("--schema", required=True)
    commands.choices["produce"].add_argument("--notes", required=True)
    commands.choices["consume"].add_argument("--count", type=int, required=True)
    commands.choices["consume"].add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    produce(args) if args.command == "produce" else consume(args)


if __name__ == "__main__":
    main()

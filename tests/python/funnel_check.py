#!/usr/bin/env python3
"""Independent checks of what funnel wrote, with readers funnel does not share code with.

- topics: confluent-kafka's AvroDeserializer (schemas fetched from the registry by id) reads
  every record of a CDC topic; the latest image per key is compared with the Postgres table.
- bronze: delta-rs (the `deltalake` package) reads the Delta table; duplicate Kafka positions
  are counted and the latest image per key is compared with the Postgres table.

Prints one JSON object per table and exits 0; the Rust tests assert on the JSON.
"""
import argparse
import datetime
import decimal
import json
import os
import sys
import time

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def norm(v):
    """One textual form per value, whatever reader produced it."""
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, float):
        return repr(v)
    return str(v)


def pg_table(url, qualified):
    schema, table = qualified.split(".")
    with psycopg.connect(url) as conn:
        pk = [r[0] for r in conn.execute(
            """SELECT a.attname FROM pg_index i
                 JOIN unnest(i.indkey::int2[]) WITH ORDINALITY AS k(att, n) ON true
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att
                WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.n""",
            (f'"{schema}"."{table}"',),
        )]
        cur = conn.execute(f'SELECT * FROM "{schema}"."{table}"')
        cols = [d.name for d in cur.description]
        rows = {}
        for r in cur:
            rec = {c: norm(v) for c, v in zip(cols, r)}
            rows[tuple(rec[k] for k in pk)] = rec
    return pk, cols, rows


def compare(expected, actual, cols):
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differ = []
    for k, row in expected.items():
        got = actual.get(k)
        if got is not None:
            bad = [c for c in cols if row.get(c) != got.get(c)]
            if bad:
                differ.append({"key": list(k), "columns": {c: [row.get(c), got.get(c)] for c in bad[:3]}})
    return {
        "expected_rows": len(expected),
        "actual_rows": len(actual),
        "missing": len(missing),
        "extra": len(extra),
        "different": len(differ),
        "examples": {"missing": [list(k) for k in missing[:3]], "extra": [list(k) for k in extra[:3]], "different": differ[:3]},
    }


def check_topic(args, qualified):
    topic = f"{args.prefix}.{qualified}"
    pk, cols, expected = pg_table(args.pg, qualified)
    registry = SchemaRegistryClient({"url": args.registry})
    de = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"funnel-check-{topic}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "broker.address.family": "v4",
    })
    md = consumer.list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions.keys())
    ends = {}
    assign = []
    for p in parts:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if hi > lo:
            ends[p] = hi
            assign.append(TopicPartition(topic, p, lo))
    consumer.assign(assign)
    state, ops, positions = {}, {}, set()
    last_pos = {}
    records = tombstones = decode_errors = duplicates = out_of_order = 0
    done = set(p for p in parts if p not in ends)
    deadline = time.time() + 600
    while len(done) < len(parts):
        if time.time() > deadline:
            raise RuntimeError(f"{topic}: end of partitions not reached within 600 s")
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                done.add(msg.partition())
            continue
        records += 1
        if msg.value() is None:
            tombstones += 1
            continue
        try:
            env = de(msg.value(), SerializationContext(topic, MessageField.VALUE))
        except Exception as e:  # noqa: BLE001 - counted and reported
            decode_errors += 1
            continue
        op = env["op"]
        ops[op] = ops.get(op, 0) + 1
        image = env["after"] if env["after"] is not None else env["before"]
        key = tuple(norm(image[k]) for k in pk)
        pos = (env["source"]["lsn"], env["source"]["change_lsn"], key)
        if pos in positions:
            # A re-sent event: recognised by its source position and not applied again.
            duplicates += 1
            continue
        positions.add(pos)
        if key in last_pos and pos[:2] <= last_pos[key]:
            out_of_order += 1
        last_pos[key] = pos[:2]
        if op == "d":
            state.pop(key, None)
        else:
            state[key] = {c: norm(image[c]) for c in cols}
    consumer.close()
    out = {"table": qualified, "topic": topic, "records": records, "tombstones": tombstones, "ops": ops,
           "decode_errors": decode_errors, "duplicate_events": duplicates, "out_of_order": out_of_order}
    out.update(compare(expected, state, cols))
    return out


def check_bronze(args, qualified):
    from deltalake import DeltaTable

    topic = f"{args.prefix}.{qualified}"
    pk, cols, expected = pg_table(args.pg, qualified)
    path = f"{args.lake}/bronze/{topic}"
    rows = DeltaTable(path).to_pyarrow_table().to_pylist()
    offsets = set()
    dup_offsets = 0
    positions = set()
    dup_positions = 0
    latest = {}
    for r in rows:
        o = (r["_kafka_partition"], r["_kafka_offset"])
        if o in offsets:
            dup_offsets += 1
        offsets.add(o)
        key = tuple(norm(r[k]) for k in pk)
        pos = (r["_source_lsn"], r["_source_change_lsn"], key)
        if pos in positions:
            dup_positions += 1
        positions.add(pos)
        if key not in latest or pos[:2] > latest[key][0]:
            latest[key] = (pos[:2], r)
    state = {k: {c: norm(r[c]) for c in cols} for k, (_, r) in latest.items() if r["_op"] != "d"}
    out = {"table": qualified, "path": path, "bronze_rows": len(rows), "duplicate_offsets": dup_offsets,
           "duplicate_events": dup_positions}
    out.update(compare(expected, state, cols))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["topics", "bronze"])
    ap.add_argument("--pg", required=True)
    ap.add_argument("--brokers", default="127.0.0.1:19092")
    ap.add_argument("--registry", default="http://127.0.0.1:18081")
    ap.add_argument("--lake", default="lake")
    ap.add_argument("--prefix", default="olist")
    ap.add_argument("tables", nargs="+")
    args = ap.parse_args()
    for t in args.tables:
        res = check_topic(args, t) if args.what == "topics" else check_bronze(args, t)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # Skip interpreter teardown: delta-rs' native threads can abort the process at exit
    # ("terminate called without an active exception") after all results were printed.
    os._exit(0)

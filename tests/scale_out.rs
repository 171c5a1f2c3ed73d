//! Partitioned state across instances: `seller-metrics` and `leads` (each a repartition step
//! and a stateful step, each step a consumer group) as 3 instances over 3 partitions, one of
//! them killed (-9) and restarted twice while the source changes — items inserted, repriced,
//! deleted and moved between sellers, sellers added and removed, leads created, moved to
//! another seller, changed and deleted — equals one instance reading the same CDC topics:
//! every seller's metrics and every lead, column for column (the latest record per key, as
//! `funnel digest` and the compacted topics keep it), and both equal the SQL over the source,
//! with exactly one processed event per change of a lead row.

mod common;

use std::time::Duration;

use common::*;

fn lead_pipeline(case: &Case, namespace: &str, instance: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = ["run", "seller-metrics", "leads", "--http-port", "0", "--namespace", namespace, "--cdc-topic-prefix", &case.prefix].iter().map(|s| s.to_string()).collect();
    if let Some(i) = instance {
        a.extend(["--instance-id".to_string(), i.to_string()]);
    }
    a
}

/// (keys, digest) of `topic` by `funnel digest <processor>` (the record count depends on
/// batch boundaries, so it is not compared).
fn digest(case: &Case, processor: &str, topic: &str, namespace: &str) -> (u64, String) {
    let out = case.run_ok(&["digest", processor, "--namespace", namespace, "--cdc-topic-prefix", &case.prefix]);
    let row = out.lines().find(|l| l.contains(topic)).unwrap_or_else(|| panic!("no digest row for {topic} in {out}"));
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells.len(), 5, "{row}");
    (cells[3].parse().unwrap(), cells[4].to_string())
}

/// A log line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The partitions each "state restored" line of a log names, e.g. `partitions=[0, 2]`.
fn restored_partitions(log: &str, what: &str) -> Vec<String> {
    log.lines().map(plain).collect::<Vec<_>>().iter().filter(|l| l.contains(what)).filter_map(|l| l.split("partitions=").nth(1)).filter_map(|r| r.split(']').next()).map(|p| format!("{p}]")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_metrics_and_leads_as_three_instances_killed_twice_equal_one_instance_and_the_sql() {
    let mut case = Case::new("scaleout").await;
    case.run_ok(&["seed", "olist", "--synthetic-scale", "1"]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), "ecommerce.order_items,ecommerce.sellers,marketing.marketing_qualified_leads,marketing.closed_deals".to_string()]);
    case.spawn(&cdc, "cdc");
    let (one, three) = (format!("{}one", case.prefix), format!("{}three", case.prefix));
    case.spawn(&lead_pipeline(&case, &one, None), "one");
    let names = ["a", "b", "c"];
    let mut instances: Vec<usize> = names.iter().map(|i| case.spawn(&lead_pipeline(&case, &three, Some(i)), &format!("three-{i}"))).collect();

    let pg = case.pg().await;
    let sellers: Vec<String> = pg.query("SELECT seller_id FROM ecommerce.sellers ORDER BY 1", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let mut rng = funnel::olist::synthetic::Rng::new(15);
    let pick = |rng: &mut funnel::olist::synthetic::Rng| sellers[rng.below(sellers.len() as u64) as usize].clone();
    for round in 0..2 {
        for i in 0..240 {
            let order = format!("scale-{round}-{}", i / 4);
            let deal = |rng: &mut funnel::olist::synthetic::Rng| format!("(SELECT mql_id FROM marketing.closed_deals ORDER BY mql_id OFFSET {} LIMIT 1)", rng.below(300));
            let sql = match rng.below(11) {
                // Leads: moved to another seller, changed, created with a deal, deleted.
                8 => format!("UPDATE marketing.closed_deals SET seller_id = '{}' WHERE mql_id = {}", pick(&mut rng), deal(&mut rng)),
                9 if i % 3 == 0 => format!("UPDATE marketing.marketing_qualified_leads SET origin = 'scale-{round}-{i}' WHERE mql_id = (SELECT mql_id FROM marketing.marketing_qualified_leads ORDER BY mql_id OFFSET {} LIMIT 1)", rng.below(500)),
                9 => format!(
                    "BEGIN; INSERT INTO marketing.marketing_qualified_leads VALUES ('scale-mql-{round}-{i}', '2018-03-01', 'scale-page', 'organic_search'); INSERT INTO marketing.closed_deals (mql_id, seller_id, won_date, business_segment) VALUES ('scale-mql-{round}-{i}', '{}', '2018-04-01', 'scale'); COMMIT",
                    pick(&mut rng)
                ),
                10 if i % 4 == 0 => format!("DELETE FROM marketing.closed_deals WHERE mql_id = {}", deal(&mut rng)),
                10 if i % 4 == 1 => format!("DELETE FROM marketing.marketing_qualified_leads WHERE mql_id LIKE 'scale-mql-%' AND mql_id = (SELECT min(mql_id) FROM marketing.marketing_qualified_leads WHERE mql_id LIKE 'scale-mql-%')"),
                0 => format!("UPDATE ecommerce.order_items SET seller_id = '{}' WHERE order_id = '{order}' AND order_item_id = 1", pick(&mut rng)),
                1 => format!("DELETE FROM ecommerce.order_items WHERE order_id = '{order}' AND order_item_id = 2"),
                2 => format!("UPDATE ecommerce.order_items SET price = price + 1.25 WHERE order_id = '{order}'"),
                // Existing items move too (the snapshot's items).
                3 => format!("UPDATE ecommerce.order_items SET seller_id = '{}' WHERE ctid = (SELECT ctid FROM ecommerce.order_items WHERE order_id NOT LIKE 'scale-%' ORDER BY order_id OFFSET {} LIMIT 1)", pick(&mut rng), rng.below(500)),
                4 if i % 40 == 4 => format!("BEGIN; INSERT INTO ecommerce.sellers VALUES ('scale-seller-{round}-{i}', '01000', 'sao paulo', 'SP'); INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{order}', 9, 'p', 'scale-seller-{round}-{i}', 10.00, 1.00) ON CONFLICT DO NOTHING; COMMIT"),
                5 if i % 60 == 5 => format!("DELETE FROM ecommerce.sellers WHERE seller_id = (SELECT seller_id FROM ecommerce.sellers WHERE seller_id LIKE 'scale-seller-%' ORDER BY 1 LIMIT 1)"),
                _ => format!(
                    "INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{order}', {}, 'p', '{}', {}.{:02}, 2.50) ON CONFLICT DO NOTHING",
                    1 + i % 4,
                    pick(&mut rng),
                    rng.below(400),
                    rng.below(100)
                ),
            };
            pg.batch_execute(&sql).await.unwrap();
            if i == 100 {
                case.kill9(instances[1]);
            }
            if i == 20 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        // Killed mid-run: its partitions moved to the others; restarted, it takes some back.
        instances[1] = case.spawn(&lead_pipeline(&case, &three, Some("b")), "three-b");
        tokio::time::sleep(Duration::from_millis(3000 + rng.below(3000))).await;
    }
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;

    // Both deployments equal the SQL over the source, and each other record for record.
    for (ns, logs) in [(&one, "one"), (&three, "three-a,three-b,three-c")] {
        let results = case.wait_checks_equal("leads", &["sellers", "topic"], &["--namespace", ns], Duration::from_secs(300), logs).await;
        for r in &results {
            assert_eq!((r["missing"].as_i64(), r["extra"].as_i64(), r["different"].as_i64()), (Some(0), Some(0), Some(0)), "{ns}: {r}");
        }
        let leads = &results[1];
        eprintln!("{ns}: sellers {} · leads {}", results[0], leads);
        assert_eq!(leads["leads_with_extra_events"].as_i64(), Some(0), "{ns}: a processed event for an unchanged lead: {leads}");
        assert_eq!(leads["leads_with_wrong_events"].as_i64(), Some(0), "{ns}: processed events are exactly the lead rows' changes: {leads}");
        assert_eq!(leads["processed_events"], leads["lead_changes"], "{ns}: {leads}");
    }
    let (d1, d3) = (digest(&case, "seller-metrics", "seller.metrics", &one), digest(&case, "seller-metrics", "seller.metrics", &three));
    let sellers: i64 = pg.query_one("SELECT count(*) FROM ecommerce.sellers", &[]).await.unwrap().get(0);
    assert_eq!(d1.0, sellers as u64, "one latest record per seller: {d1:?}");
    assert_eq!(d1, d3, "3 instances ≠ 1 instance (keys, digest of the latest record per seller)");
    let (l1, l3) = (digest(&case, "leads", "marketing.lead.v1", &one), digest(&case, "leads", "marketing.lead.v1", &three));
    let mqls: i64 = pg.query_one("SELECT count(*) FROM marketing.marketing_qualified_leads", &[]).await.unwrap().get(0);
    assert_eq!(l1.0, mqls as u64, "one latest record per lead: {l1:?}");
    assert_eq!(l1, l3, "3 instances ≠ 1 instance (keys, digest of the latest record per lead)");

    // The three shared the work: each restored the state of only some partitions at some
    // point (not all three), and the restarted one took partitions back after each kill.
    for i in names {
        let log = case.log(&format!("three-{i}"));
        let parts = restored_partitions(&log, "seller metrics state restored");
        assert!(parts.iter().any(|p| p != "[0, 1, 2]" && p != "[]"), "instance {i} never held a strict part of the sellers: {parts:?}\n{}", log.lines().rev().take(30).collect::<Vec<_>>().join("\n"));
    }
    for i in names {
        let parts = restored_partitions(&case.log(&format!("three-{i}")), "leads state restored");
        assert!(parts.iter().any(|p| p != "[0, 1, 2]" && p != "[]"), "instance {i} never held a strict part of the leads: {parts:?}");
    }
    for what in ["seller metrics state restored", "leads state restored"] {
        assert!(restored_partitions(&case.log("one"), what).iter().all(|p| p == "[0, 1, 2]"), "the single instance holds every partition ({what})");
    }
}

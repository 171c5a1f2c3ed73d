//! Lead pipeline acceptance on the real Olist marketing data: seller-metrics and leads
//! against `sql/checks/*.sql` run on the Postgres source, incremental updates, kill -9 of both
//! processors and `funnel replay leads`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;

const CDC_TABLES: &str = "ecommerce.order_items,ecommerce.sellers,marketing.marketing_qualified_leads,marketing.closed_deals";

fn leads_args(case: &Case, processor: &str) -> Vec<String> {
    ["run", processor, "--http-port", "0", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--gold-flush-ms", "300"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The join and its gold table in one process (killed together).
fn leads_and_gold(case: &Case) -> Vec<String> {
    let mut a = leads_args(case, "leads");
    a.insert(2, "leads-gold".into());
    a
}

/// `funnel replay <processor>` with the processor's own flags (the processor is stopped).
fn replay(case: &Case, processor: &str) {
    let mut args = leads_args(case, processor);
    args[0] = "replay".into();
    args.retain(|a| a != "--http-port" && a != "0");
    case.run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn n(r: &Json, k: &str) -> i64 {
    r.get(k).and_then(Json::as_i64).unwrap_or(-1)
}

fn assert_same(r: &Json) {
    assert_eq!((n(r, "missing"), n(r, "extra"), n(r, "different")), (0, 0, 0), "differs from sql/checks: {r}");
}

/// Gold, the lead topic and the seller metrics topic equal the SQL; the consistency sums hold;
/// the processed events are exactly the lead rows' changes.
fn assert_leads_equal_sql(case: &Case) -> Vec<Json> {
    let results = case.check_with("leads", &["gold", "topic", "sellers"], &["--namespace", &case.prefix]);
    for r in &results {
        assert_same(r);
    }
    let gold = &results[0];
    let f = |k: &str| gold[k].as_f64().unwrap();
    assert!((f("lead_revenue_sum") - f("seller_revenue_sum")).abs() < 0.001, "Σ lead revenue ≠ Σ seller revenue: {gold}");
    assert_eq!(n(gold, "lead_orders_sum"), n(gold, "seller_orders_sum"), "{gold}");
    assert_eq!(n(&results[1], "leads_with_extra_events"), 0, "a processed event for an unchanged lead: {}", results[1]);
    assert_eq!(n(&results[1], "leads_with_wrong_events"), 0, "processed events are exactly the lead row's changes: {}", results[1]);
    assert_eq!(n(&results[1], "processed_events"), n(&results[1], "lead_changes"), "{}", results[1]);
    assert!(n(&results[1], "processed_events") >= 8000, "every lead's creation has its event: {}", results[1]);
    results
}

/// Poll until the gold table equals the SQL (the checker takes seconds).
async fn wait_gold_equal(case: &Case, timeout: Duration) {
    case.wait_checks_equal("leads", &["gold"], &["--namespace", &case.prefix], timeout, "leads").await;
}

async fn gold_lead(case: &Case, lead_id: &str) -> Option<serde_json::Map<String, Json>> {
    let ctx = funnel::lake::query::context(&funnel::lake::location::Lake::local(case.lake.path()).ok()?).await.ok()?;
    let rows = funnel::lake::query::rows(&ctx, &format!("SELECT * FROM gold_m_dim_lead WHERE lead_id = '{lead_id}'")).await.ok()?;
    rows.into_iter().next()
}

/// Wait until the gold row of `lead_id` satisfies `ok`; returns the time it took.
async fn wait_gold_row(case: &Case, lead_id: &str, what: &str, ok: impl Fn(&serde_json::Map<String, Json>) -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(row) = gold_lead(case, lead_id).await {
            if ok(&row) {
                return t0.elapsed();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "lead {lead_id}: {what} never showed in gold: {:?}", gold_lead(case, lead_id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_dimension_equals_sql_incrementally_under_kill_and_replay() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("leads").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), CDC_TABLES.to_string()]);
    case.spawn(&cdc, "cdc");
    let mut sm = case.spawn(&leads_args(&case, "seller-metrics"), "seller-metrics");
    let mut leads = case.spawn(&leads_and_gold(&case), "leads");

    // 1. The real data: 8000 leads equal to the SQL, the reference numbers.
    wait_gold_equal(&case, Duration::from_secs(900)).await;
    let results = assert_leads_equal_sql(&case);
    let gold = &results[0];
    assert_eq!((n(gold, "gold_rows"), n(gold, "closed_deals"), n(gold, "leads_with_seller")), (8000, 842, 380), "{gold}");
    // The same table through `funnel sql`, which refuses anything but a query.
    let out = case.run_ok(&["sql", "--format", "json", "SELECT count(*) AS n, count(seller_fk) AS s FROM gold_m_dim_lead"]);
    assert_eq!(out.trim(), r#"{"n":8000,"s":380}"#);
    let table = case.run_ok(&["sql", "SELECT advertising_channel, count(*) AS leads FROM gold_m_dim_lead GROUP BY 1 ORDER BY 2 DESC LIMIT 2"]);
    assert!(table.contains("organic_search") && table.contains("2296") && table.contains("(2 rows)"), "{table}");
    let refused = case.funnel().args(["sql", "DROP TABLE gold_m_dim_lead"]).output().unwrap();
    assert!(!refused.status.success(), "DDL must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).to_lowercase().contains("ddl"), "{}", String::from_utf8_lossy(&refused.stderr));

    // 2. Incremental: an order with two items for a lead's seller, a closed deal edited,
    //    an order item deleted — each lead row follows within seconds.
    let pg = case.pg().await;
    let row = pg
        .query_one(
            "SELECT d.mql_id, d.seller_id FROM marketing.closed_deals d JOIN ecommerce.sellers s USING (seller_id) \
             WHERE EXISTS (SELECT 1 FROM ecommerce.order_items i WHERE i.seller_id = d.seller_id) ORDER BY d.mql_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (lead, seller): (String, String) = (row.get(0), row.get(1));
    let before = gold_lead(&case, &lead).await.expect("lead in gold");
    let orders0 = before["number_of_orders_lifetime"].as_i64().unwrap();
    let revenue0 = before["revenue_lifetime"].as_f64().unwrap();
    pg.batch_execute(&format!(
        "BEGIN; INSERT INTO ecommerce.orders (order_id, customer_id, order_status, order_purchase_timestamp) VALUES ('leadtest-o1', 'leadtest-c1', 'created', now()); \
         INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES \
           ('leadtest-o1', 1, 'p1', '{seller}', 100.25, 10.10), ('leadtest-o1', 2, 'p2', '{seller}', 50.00, 5.05); COMMIT;"
    ))
    .await
    .unwrap();
    let t_order = wait_gold_row(&case, &lead, "the new order", |r| {
        r["number_of_orders_lifetime"].as_i64() == Some(orders0 + 1) && (r["revenue_lifetime"].as_f64().unwrap_or(0.0) - (revenue0 + 165.40)).abs() < 0.001
    })
    .await;
    pg.batch_execute(&format!("UPDATE marketing.closed_deals SET business_segment = 'leadtest segment', declared_monthly_revenue = 4242 WHERE mql_id = '{lead}'")).await.unwrap();
    let t_deal = wait_gold_row(&case, &lead, "the edited deal", |r| r["business_segment"] == "leadtest segment" && r["declared_monthly_revenue"].as_f64() == Some(4242.0)).await;
    pg.batch_execute("DELETE FROM ecommerce.order_items WHERE order_id = 'leadtest-o1' AND order_item_id = 2").await.unwrap();
    let t_delete = wait_gold_row(&case, &lead, "the deleted item", |r| (r["revenue_lifetime"].as_f64().unwrap_or(0.0) - (revenue0 + 110.35)).abs() < 0.001).await;
    eprintln!("source commit → gold m_dim.lead: new order {t_order:?}, deal update {t_deal:?}, item delete {t_delete:?}");
    wait_gold_equal(&case, Duration::from_secs(60)).await;
    assert_leads_equal_sql(&case);

    // 3. kill -9 of both processors while the source changes, then restart.
    let mut rng = funnel::olist::synthetic::Rng::new(7);
    let sellers: Vec<String> = pg.query("SELECT seller_id FROM marketing.closed_deals d JOIN ecommerce.sellers USING (seller_id)", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for round in 0..4 {
        for i in 0..150 {
            let s = &sellers[rng.below(sellers.len() as u64) as usize];
            let order = format!("leadkill-{round}-{}", i / 3);
            let sql = match rng.below(4) {
                0 => format!("UPDATE marketing.closed_deals SET declared_product_catalog_size = {} WHERE seller_id = '{s}'", rng.below(500)),
                1 => format!("DELETE FROM ecommerce.order_items WHERE order_id = '{order}' AND order_item_id = 1"),
                _ => format!(
                    "INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{order}', {}, 'p', '{s}', {}.{:02}, 1.50) ON CONFLICT DO NOTHING",
                    1 + i % 3,
                    rng.below(300),
                    rng.below(100)
                ),
            };
            pg.batch_execute(&sql).await.unwrap();
            if i == 60 {
                case.kill9(if round % 2 == 0 { sm } else { leads });
            }
            if i == 100 {
                case.kill9(if round % 2 == 0 { leads } else { sm });
            }
        }
        sm = case.spawn(&leads_args(&case, "seller-metrics"), "seller-metrics");
        leads = case.spawn(&leads_and_gold(&case), "leads");
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2000))).await;
    }
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    wait_gold_equal(&case, Duration::from_secs(300)).await;
    let results = assert_leads_equal_sql(&case);
    eprintln!("after kill -9: {}", results[1]);

    // 4. Replay rebuilds an identical m_dim.lead.
    case.kill9(leads);
    let live = case.check_with("leads", &["gold"], &["--namespace", &case.prefix]).remove(0);
    replay(&case, "leads");
    let rebuilt = case.check_with("leads", &["gold"], &["--namespace", &case.prefix]).remove(0);
    assert_same(&rebuilt);
    assert_eq!(live["digest"], rebuilt["digest"], "replayed m_dim.lead differs from the live one");
    assert_eq!(n(&rebuilt, "gold_rows"), 8000);

    // 5. Replay of seller-metrics republishes metrics equal to the SQL.
    case.kill9(sm);
    replay(&case, "seller-metrics");
    let sellers = case.check_with("leads", &["sellers"], &["--namespace", &case.prefix]).remove(0);
    assert_same(&sellers);
}

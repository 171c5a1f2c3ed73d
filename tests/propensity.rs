//! Propensity models: trained on the lake with a time split, evaluated against their baselines
//! on the later period, reproducible, and never fed anything after their cutoff.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use funnel::propensity::artefact::Artefact;
use funnel::propensity::features::{self, ModelKind};

fn loader_args(case: &Case) -> Vec<String> {
    ["run", "loader", "--http-port", "0", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--cdc-name", &case.name, "--cdc-publication", &case.name, "--loader-flush-ms", "300"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn metrics_rows(case: &Case, version: &str) -> Vec<serde_json::Value> {
    json_lines(&case.run_ok(&["sql", "--format", "json", &format!("SELECT scorer, examples, positives, roc_auc, pr_auc, log_loss FROM gold_propensity_metrics WHERE version = '{version}' ORDER BY scorer = 'model' DESC")]))
}

/// On the real Olist leads: trained on the leads whose horizon ended by the cutoff, evaluated on
/// the leads of the period after it, the model ranks better than the conversion rate of the
/// lead's channel; the metrics are in the artefact and in gold_propensity_metrics; training
/// again on the same data gives the same model; a corrupt artefact is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_model_beats_its_channel_baseline_on_the_later_period_and_retrains_identically() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("plead").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".into(), "marketing.marketing_qualified_leads,marketing.closed_deals".into()]);
    case.spawn(&cdc, "cdc");
    case.spawn(&loader_args(&case), "loader");
    case.wait_checks_equal("silver", &["marketing.marketing_qualified_leads=m_data.marketing_qualified_lead", "marketing.closed_deals=m_data.closed_deal"], &[], Duration::from_secs(300), "loader").await;

    let out = case.run_ok(&["train", "propensity", "--model", "leads"]);
    eprintln!("{out}");
    let (models, lake) = (case.lake.path().join("models"), funnel::lake::location::Lake::local(case.lake.path()).unwrap());
    let a = Artefact::load_current(&models, ModelKind::Leads).unwrap();
    let (m, b) = (&a.evaluation.model, &a.evaluation.baseline);
    eprintln!("lead model ROC AUC {:.4} vs channel baseline {:.4}; PR AUC {:.4} vs {:.4}", m.roc_auc, b.roc_auc, m.pr_auc, b.pr_auc);
    // The time split: training labels end at the cutoff, the held-out leads start there.
    assert_eq!((a.train_window.label_until, a.eval_window.from), (a.cutoff, a.cutoff));
    assert!(a.train_window.until <= a.cutoff - chrono::Duration::days(a.horizon_days), "training leads' horizons end by the cutoff");
    assert_eq!(a.cutoff.format("%Y-%m-%d").to_string(), "2018-04-02", "default cutoff: last contact (2018-05-31) + 1 day − 60 days");
    assert_eq!(m.examples, b.examples);
    assert!(m.examples > 2000 && m.positives > 100, "{m:?}");
    assert!(m.roc_auc > b.roc_auc, "the lead model ({:.4}) must beat its channel baseline ({:.4}) on the held-out period", m.roc_auc, b.roc_auc);
    for s in ["ROC AUC", "PR AUC", "log loss", "channel conversion rate", "calibration"] {
        assert!(out.contains(s), "{s} missing from the report:\n{out}");
    }
    // The metrics table holds the artefact's numbers.
    let rows = metrics_rows(&case, &a.version);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0]["scorer"].as_str(), rows[0]["examples"].as_u64(), rows[0]["roc_auc"].as_f64(), rows[0]["pr_auc"].as_f64()), (Some("model"), Some(m.examples as u64), Some(m.roc_auc), Some(m.pr_auc)));
    assert_eq!((rows[1]["scorer"].as_str(), rows[1]["roc_auc"].as_f64(), rows[1]["log_loss"].as_f64()), (Some("channel conversion rate"), Some(b.roc_auc), Some(b.log_loss)));

    // The same data and seed: the same rows, weights and scores, as a new version.
    case.run_ok(&["train", "propensity", "--model", "leads"]);
    let again = Artefact::load_current(&models, ModelKind::Leads).unwrap();
    assert_ne!(again.version, a.version);
    assert_eq!((&again.fingerprint, &again.weights, again.intercept, &again.evaluation), (&a.fingerprint, &a.weights, a.intercept, &a.evaluation));
    assert_eq!(features::examples(&lake, ModelKind::Leads, &a.train_window, &case.prefix).await.unwrap(), Artefact::training_features(&models, ModelKind::Leads, &a.version).unwrap());

    // A corrupt artefact is a clear error naming the file.
    std::fs::write(again.dir(&models).join("model.json"), b"{\"model\": \"leads\", \"weights\": [").unwrap();
    let e = format!("{:#}", Artefact::load_current(&models, ModelKind::Leads).unwrap_err());
    assert!(e.contains("corrupt") && e.contains(&again.version), "{e}");
    let e = format!("{:#}", Artefact::load_current(&models, ModelKind::Customers).unwrap_err());
    assert!(e.contains("no customers model") && e.contains("funnel train propensity --model customers"), "{e}");
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The customer model's training rows are the features as of one horizon before the cutoff.
/// Orders, payments, items and reviews that happen after that time are added to the source
/// and reach the lake: recomputing the training features gives exactly the stored rows (only
/// the label of the customer who ordered again changes), while a later as-of time sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_training_features_ignore_everything_after_their_time() {
    let mut case = Case::new("pcust").await;
    case.run_ok(&["seed", "olist", "--synthetic-scale", "8"]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), "ecommerce.customers,ecommerce.orders,ecommerce.order_items,ecommerce.order_payments,ecommerce.products,ecommerce.order_reviews".to_string()]);
    case.spawn(&cdc, "cdc");
    case.wait_streaming(Duration::from_secs(300)).await;
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    case.drain_bronze();

    let out = case.run_ok(&["train", "propensity", "--model", "customers", "--cdc-topic-prefix", &case.prefix]);
    eprintln!("{out}");
    let (models, lake) = (case.lake.path().join("models"), funnel::lake::location::Lake::local(case.lake.path()).unwrap());
    let a = Artefact::load_current(&models, ModelKind::Customers).unwrap();
    assert!(out.contains("recency alone"), "{out}");
    let stored = Artefact::training_features(&models, ModelKind::Customers, &a.version).unwrap();
    assert_eq!(stored.len(), a.train_rows);
    let t = a.train_window.from;
    assert_eq!((a.train_window.label_until, a.eval_window.from), (a.cutoff, a.cutoff));

    // A person with orders by then who did not order again before the cutoff.
    let p = stored.iter().find(|e| !e.label).expect("a customer without a repeat order").clone();
    let pg = case.pg().await;
    let row = pg.query_one("SELECT c.customer_id, o.order_id FROM ecommerce.customers c JOIN ecommerce.orders o ON o.customer_id = c.customer_id WHERE c.customer_unique_id = $1 AND o.order_purchase_timestamp <= $2::text::timestamp ORDER BY o.order_id LIMIT 1", &[&p.key, &ts(t)]).await.unwrap();
    let (customer_id, old_order): (String, String) = (row.get(0), row.get(1));
    let (product, seller): (String, String) = {
        let r = pg.query_one("SELECT product_id, seller_id FROM ecommerce.order_items ORDER BY order_id LIMIT 1", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    // Review scores unlike the old order's, so that its review average must move.
    let old_score: Option<i32> = pg.query_one("SELECT min(review_score)::int FROM ecommerce.order_reviews WHERE order_id = $1", &[&old_order]).await.unwrap().get(0);
    let score = if old_score == Some(5) { 1 } else { 5 };
    let d = |days: i64| ts(t + chrono::Duration::days(days));
    pg.batch_execute(&format!(
        "BEGIN;
         INSERT INTO ecommerce.orders VALUES ('leak-order', '{customer_id}', 'delivered', '{}', '{}', '{}', '{}', '{}');
         INSERT INTO ecommerce.order_payments VALUES ('leak-order', 1, 'credit_card', 1, 123.45);
         INSERT INTO ecommerce.order_items VALUES ('leak-order', 1, '{product}', '{seller}', '{}', 100.00, 23.45);
         INSERT INTO ecommerce.order_reviews VALUES ('leak-review', 'leak-order', {score}, '', '', '{}', '{}');
         INSERT INTO ecommerce.order_reviews VALUES ('leak-review-old', '{old_order}', {score}, '', '', '{}', '{}');
         COMMIT;",
        d(10), d(10), d(11), d(15), d(30), d(16), d(16), d(17), d(1), d(2)
    ))
    .await
    .unwrap();
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    case.drain_bronze();
    let n = json_lines(&case.run_ok(&["sql", "--format", "json", &format!("SELECT count(*) AS n FROM bronze_{}_ecommerce_orders WHERE order_id = 'leak-order'", case.prefix)]));
    assert_eq!(n[0]["n"].as_i64(), Some(1), "the later order is in the lake");

    // Recomputed as of the training time: the stored rows, but for the one label.
    let now = features::examples(&lake, ModelKind::Customers, &a.train_window, &case.prefix).await.unwrap();
    assert_eq!(now.len(), stored.len());
    let mut changed = vec![];
    for (x, y) in now.iter().zip(&stored) {
        assert_eq!((&x.key, &x.values), (&y.key, &y.values), "training features changed after the training time");
        if x.label != y.label {
            changed.push(x.key.clone());
        }
    }
    assert_eq!(changed, vec![p.key.clone()], "only the customer who ordered again has a new label");

    // A later as-of time sees the order and both reviews.
    let mut later = a.train_window.clone();
    later.from = t + chrono::Duration::days(40);
    later.until = later.from;
    let after = features::examples(&lake, ModelKind::Customers, &later, &case.prefix).await.unwrap();
    let q = after.iter().find(|e| e.key == p.key).unwrap();
    let count = |e: &features::Example| e.values.numeric[0].unwrap();
    assert_eq!(count(q), count(&p) + 1.0, "{q:?} vs {p:?}");
    assert_ne!(q.values.numeric[3], p.values.numeric[3], "the reviews count later: {q:?} vs {p:?}");
}

/// The current score per key of a score topic: (key, score, model_version).
async fn topic_scores(case: &Case, topic: &str, key: &str) -> std::collections::BTreeMap<String, (f64, String)> {
    let mut out = std::collections::BTreeMap::new();
    for v in case.topic_json(topic).await {
        out.insert(v[key].as_str().unwrap().to_string(), (v["score"].as_f64().unwrap(), v["model_version"].as_str().unwrap().to_string()));
    }
    out
}

/// `dir`: the table's directory under gold/ (its SQL name is gold_<dir> with dots as underscores).
fn gold_scores(case: &Case, dir: &str, key: &str) -> std::collections::BTreeMap<String, (f64, String)> {
    if !case.lake.path().join("gold").join(dir).join("_delta_log").is_dir() {
        return Default::default();
    }
    let table = format!("gold_{}", dir.replace('.', "_"));
    json_lines(&case.run_ok(&["sql", "--format", "json", &format!("SELECT {key} AS k, score, model_version FROM {table}")]))
        .into_iter()
        .map(|r| (r["k"].as_str().unwrap().to_string(), (r["score"].as_f64().unwrap(), r["model_version"].as_str().unwrap().to_string())))
        .collect()
}

/// The scores in Redis: `hash` `propensity` (customers) or `lead_score`, ranked in `by`.
async fn redis_scores(case: &Case, hash: &str, by: &str) -> std::collections::BTreeMap<String, (f64, String)> {
    let client = redis::Client::open(case.stack.redis.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let ranking = format!("{}:{by}", case.prefix);
    let ids: Vec<String> = redis::cmd("ZRANGE").arg(&ranking).arg(0).arg(-1).query_async(&mut con).await.unwrap();
    let mut out = std::collections::BTreeMap::new();
    for id in ids {
        // Rank and hash read in one MULTI: the cache writes both in one script, and two
        // separate reads could straddle a new score (CI saw exactly that).
        let (rank, h): (Option<f64>, std::collections::BTreeMap<String, String>) =
            redis::pipe().atomic().cmd("ZSCORE").arg(&ranking).arg(&id).cmd("HGETALL").arg(format!("{}:{hash}:{id}", case.prefix)).query_async(&mut con).await.unwrap();
        let Some(rank) = rank else { continue };
        let score: f64 = h["score"].parse().unwrap();
        assert_eq!(rank, score, "{id}: ranked by its score");
        out.insert(id, (score, h["model_version"].clone()));
    }
    out
}

fn count(case: &Case, table: &str) -> i64 {
    json_lines(&case.run_ok(&["sql", "--format", "json", &format!("SELECT count(*) AS n FROM {table}")]))[0]["n"].as_i64().unwrap()
}

fn args(case: &Case, what: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = what.iter().map(|s| s.to_string()).collect();
    a.extend(["--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--redis-prefix", &case.prefix, "--gold-flush-ms", "300", "--propensity-gold-flush-ms", "300"].iter().map(|s| s.to_string()));
    a
}

/// Both models trained on the lake, then `funnel run propensity` scores every customer of gold
/// c360 and every lead of gold m_dim.lead exactly once, equal in the score topic, gold and
/// Redis; a new order or a closed deal changes the score within seconds; a new model version
/// is used without a restart and a broken one is refused while the last good one goes on; a
/// replay killed -9 three times ends equal to an uninterrupted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_customer_and_lead_has_one_current_score_everywhere_through_changes_new_models_and_kill_9() {
    let mut case = Case::new("pscore").await;
    case.run_ok(&["seed", "olist", "--synthetic-scale", "8"]);
    case.spawn(&case.cdc_args(), "cdc");
    case.wait_streaming(Duration::from_secs(300)).await;
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    case.drain_bronze();
    case.spawn(&loader_args(&case), "loader");
    case.wait_checks_equal("silver", &["marketing.marketing_qualified_leads=m_data.marketing_qualified_lead", "marketing.closed_deals=m_data.closed_deal"], &[], Duration::from_secs(300), "loader").await;
    case.run_ok(&["train", "propensity", "--model", "leads"]);
    case.run_ok(&["train", "propensity", "--model", "customers", "--cdc-topic-prefix", &case.prefix]);
    let (models, lake) = (case.lake.path().join("models"), funnel::lake::location::Lake::local(case.lake.path()).unwrap());
    let customers_model = Artefact::load_current(&models, ModelKind::Customers).unwrap();
    let leads_model = Artefact::load_current(&models, ModelKind::Leads).unwrap();

    case.spawn(&args(&case, &["run", "seller-metrics", "leads", "leads-gold", "--http-port", "0"]), "leads");
    case.spawn(&args(&case, &["run", "domain", "c360", "lake", "cache", "--http-port", "0"]), "c360");
    let port = free_port();
    let mut scorer = case.spawn(&args(&case, &["run", "propensity", "--http-port", &port.to_string()]), "propensity");
    let (customers_topic, leads_topic) = (format!("{}.dom.customer.propensity.v1", case.prefix), format!("{}.marketing.lead.score.v1", case.prefix));

    // Everyone scored once, the same everywhere.
    let t0 = std::time::Instant::now();
    wait_for(Duration::from_secs(900), "a score per customer of gold c360 and per lead of gold m_dim.lead", || async {
        let ok = |t: &str| case.lake.path().join("gold").join(t).join("_delta_log").is_dir();
        ok("c360") && ok("m_dim.lead") && ok("c360_propensity") && ok("m_dim.lead_score")
            && count(&case, "gold_c360") == count(&case, "gold_c360_propensity")
            && count(&case, "gold_m_dim_lead") == count(&case, "gold_m_dim_lead_score")
            && count(&case, "gold_c360") > 7000
    })
    .await;
    eprintln!("all scored after {:.0} s", t0.elapsed().as_secs_f64());
    let settle = || async {
        let mut last = None;
        for _ in 0..60 {
            let now = (
                topic_scores(&case, &customers_topic, "customer_id").await,
                gold_scores(&case, "c360_propensity", "customer_id"),
                redis_scores(&case, "propensity", "by_propensity").await,
                topic_scores(&case, &leads_topic, "lead_id").await,
                gold_scores(&case, "m_dim.lead_score", "lead_id"),
                redis_scores(&case, "lead_score", "leads_by_propensity").await,
            );
            if now.0 == now.1 && now.1 == now.2 && now.3 == now.4 && now.4 == now.5 {
                return now;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let l = last.unwrap();
        let first_difference = |a: &std::collections::BTreeMap<String, (f64, String)>, b: &std::collections::BTreeMap<String, (f64, String)>| a.iter().find(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v:?} vs {:?}", b.get(k)));
        panic!(
            "scores never equal in topic, gold and redis: {} / {} / {} customers (topic vs gold {:?}, gold vs redis {:?}), {} / {} / {} leads (topic vs gold {:?}, gold vs redis {:?})",
            l.0.len(), l.1.len(), l.2.len(), first_difference(&l.0, &l.1), first_difference(&l.1, &l.2), l.3.len(), l.4.len(), l.5.len(), first_difference(&l.3, &l.4), first_difference(&l.4, &l.5)
        );
    };
    let (customers, _, _, leads, _, _) = settle().await;
    let c360_ids: Vec<String> = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT customer_id FROM gold_c360 ORDER BY customer_id"])).iter().map(|r| r["customer_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(customers.keys().cloned().collect::<Vec<_>>(), c360_ids, "one current score per customer of gold c360");
    assert!(customers.values().all(|(s, v)| (0.0..=1.0).contains(s) && v == &customers_model.version));
    assert_eq!(leads.len() as i64, count(&case, "gold_m_dim_lead"));
    assert!(leads.values().all(|(_, v)| v == &leads_model.version));
    // The page's view sorted by propensity: the highest scores first, each with its score.
    {
        let client = redis::Client::open(case.stack.redis.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let f = funnel::c360::view::Filter { sort: Some("propensity".into()), limit: Some(20), ..Default::default() };
        let page = funnel::c360::view::query(&mut con, &case.prefix, &f).await.unwrap();
        let shown: Vec<(String, f64)> = page["customers"].as_array().unwrap().iter().map(|c| (c["customer_id"].as_str().unwrap().to_string(), c["propensity"].as_str().unwrap().parse().unwrap())).collect();
        let mut best: Vec<(String, f64)> = customers.iter().map(|(k, (s, _))| (k.clone(), *s)).collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        assert_eq!(shown.iter().map(|x| x.1).collect::<Vec<_>>(), best[..20].iter().map(|x| x.1).collect::<Vec<_>>(), "the page sorted by propensity shows the 20 best scores, highest first");
        assert_eq!(page["total"].as_u64(), Some(customers.len() as u64));
    }
    // A campaign audience "segment X with propensity ≥ p" is exactly the gold rows that say so.
    let (segment, threshold) = {
        let r = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT c.segment AS segment, approx_percentile_cont(p.score, 0.5) AS median FROM gold_c360 c JOIN gold_c360_propensity p ON p.customer_id = c.customer_id GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"]));
        (r[0]["segment"].as_str().unwrap().to_string(), r[0]["median"].as_f64().unwrap())
    };
    let expected: Vec<String> = json_lines(&case.run_ok(&["sql", "--format", "json", &format!("SELECT c.customer_id AS id FROM gold_c360 c JOIN gold_c360_propensity p ON p.customer_id = c.customer_id WHERE c.segment = '{segment}' AND p.score >= {threshold} ORDER BY 1")]))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let def = funnel::campaigns::records::Definition {
        campaign_id: "cmp-propensity".into(), name: "likely buyers".into(), sender: "news@olist.example".into(), subject: "s".into(), html_template: None, text_template: Some("t".into()), batch_size: 100,
        audience: serde_json::json!({"c360": {"segment": [segment], "min_propensity": threshold}}).to_string(), fields: vec![], expire_after_ms: 0, created_at: 0,
    };
    let audience: Vec<String> = funnel::campaigns::audience::resolve(&def, &lake).await.unwrap().into_iter().map(|r| r.id).collect();
    assert!(!expected.is_empty() && expected.len() < count(&case, "gold_c360") as usize / 2, "{} of the segment {segment} at ≥ {threshold}", expected.len());
    assert_eq!(audience, expected, "the audience of segment {segment} with propensity ≥ {threshold}");
    // No skew between training and serving: an open lead's streamed score is the model applied
    // to the features the training SQL computes for it.
    let far = DateTime::<Utc>::from_timestamp(4_102_444_800, 0).unwrap();
    let all = features::Window { from: DateTime::UNIX_EPOCH, until: far, label_until: far, horizon_days: 60 };
    let by_key: std::collections::HashMap<String, features::Values> = features::examples(&lake, ModelKind::Leads, &all, &case.prefix).await.unwrap().into_iter().map(|e| (e.key, e.values)).collect();
    let open_leads = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT lead_id, score FROM gold_m_dim_lead_score WHERE basis = 'model'"]));
    assert!(open_leads.len() > 100);
    for r in &open_leads {
        let id = r["lead_id"].as_str().unwrap();
        let expected = leads_model.score(&by_key[id]);
        assert!((r["score"].as_f64().unwrap() - expected).abs() < 1e-12, "lead {id}: streamed {} vs the model on the training SQL's features {expected}", r["score"]);
    }

    // A new order changes its customer's score within seconds.
    let pg = case.pg().await;
    let someone = customers.keys().nth(7).unwrap().clone();
    let cid: String = pg.query_one("SELECT customer_id FROM ecommerce.customers WHERE customer_unique_id = $1 LIMIT 1", &[&someone]).await.unwrap().get(0);
    let before = customers[&someone].0;
    let t0 = std::time::Instant::now();
    pg.batch_execute(&format!("BEGIN; INSERT INTO ecommerce.orders VALUES ('score-order-1', '{cid}', 'delivered', '2018-10-16 10:00:00', NULL, NULL, NULL, '2018-11-01 00:00:00'); INSERT INTO ecommerce.order_payments VALUES ('score-order-1', 1, 'boleto', 1, 999.00); COMMIT;")).await.unwrap();
    wait_for(Duration::from_secs(60), "the customer's score to change", || async { topic_scores(&case, &customers_topic, "customer_id").await.get(&someone).is_some_and(|s| s.0 != before) }).await;
    eprintln!("a new order changed the score in {:.1} s", t0.elapsed().as_secs_f64());
    // A deal for an open lead: the lead has converted, its score is 1.
    let open = leads.iter().find(|(_, (s, _))| *s < 1.0).unwrap().0.clone();
    let t0 = std::time::Instant::now();
    pg.execute("INSERT INTO marketing.closed_deals (mql_id, seller_id, won_date) VALUES ($1, 'score-seller', '2018-10-01 00:00:00')", &[&open]).await.unwrap();
    wait_for(Duration::from_secs(60), "the lead's score to become 1", || async { topic_scores(&case, &leads_topic, "lead_id").await.get(&open).is_some_and(|s| s.0 == 1.0) }).await;
    eprintln!("a closed deal set the lead's score to 1 in {:.1} s", t0.elapsed().as_secs_f64());

    // A new version is used without a restart; a broken one is refused, the last good one kept.
    case.run_ok(&["train", "propensity", "--model", "customers", "--cdc-topic-prefix", &case.prefix, "--alpha", "3"]);
    let v2 = Artefact::load_current(&models, ModelKind::Customers).unwrap();
    assert_ne!(v2.version, customers_model.version);
    pg.batch_execute(&format!("INSERT INTO ecommerce.orders VALUES ('score-order-2', '{cid}', 'delivered', '2018-10-17 10:00:00', NULL, NULL, NULL, '2018-11-01 00:00:00')")).await.unwrap();
    wait_for(Duration::from_secs(60), "a score by the new version", || async { topic_scores(&case, &customers_topic, "customer_id").await.get(&someone).is_some_and(|s| s.1 == v2.version) }).await;
    let broken = funnel::propensity::artefact::model_dir(&models, ModelKind::Customers);
    std::fs::create_dir_all(broken.join("29990101T000000000Z")).unwrap();
    std::fs::write(broken.join("29990101T000000000Z").join("model.json"), b"{ not json").unwrap();
    std::fs::write(broken.join("CURRENT"), b"29990101T000000000Z\n").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.batch_execute(&format!("INSERT INTO ecommerce.orders VALUES ('score-order-3', '{cid}', 'delivered', '2018-10-18 10:00:00', NULL, NULL, NULL, '2018-11-01 00:00:00')")).await.unwrap();
    let before = topic_scores(&case, &customers_topic, "customer_id").await[&someone].clone();
    wait_for(Duration::from_secs(60), "a score after the third order", || async { topic_scores(&case, &customers_topic, "customer_id").await.get(&someone).is_some_and(|s| *s != before) }).await;
    assert_eq!(topic_scores(&case, &customers_topic, "customer_id").await[&someone].1, v2.version, "the last good version goes on");
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("propensity_model_loads_total{model=\"customers\",outcome=\"failed\"}") && !l.ends_with(" 0")), "{}", metrics.lines().filter(|l| l.starts_with("propensity")).collect::<Vec<_>>().join("\n"));
    assert!(case.log("propensity").contains("keeping the last good one"));
    std::fs::write(broken.join("CURRENT"), format!("{}\n", v2.version)).unwrap();

    // Replays: uninterrupted, then killed -9 three times: the same scores.
    case.kill9(scorer);
    let replay: Vec<String> = ["replay", "propensity", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--propensity-gold-flush-ms", "300"].iter().map(|s| s.to_string()).collect();
    case.run_ok(&replay.iter().map(String::as_str).collect::<Vec<_>>());
    let uninterrupted = (topic_scores(&case, &customers_topic, "customer_id").await, gold_scores(&case, "c360_propensity", "customer_id"), topic_scores(&case, &leads_topic, "lead_id").await, gold_scores(&case, "m_dim.lead_score", "lead_id"));
    assert!(uninterrupted.0.values().all(|(_, v)| v == &v2.version), "the replay rescored every customer with the current model");
    assert_eq!((&uninterrupted.0, &uninterrupted.2), (&uninterrupted.1, &uninterrupted.3));
    for k in 0..3 {
        let r = case.spawn(&replay, &format!("replay{k}"));
        tokio::time::sleep(Duration::from_millis(2500 + 1500 * k as u64)).await;
        case.kill9(r);
    }
    case.run_ok(&replay.iter().map(String::as_str).collect::<Vec<_>>());
    let killed = (topic_scores(&case, &customers_topic, "customer_id").await, gold_scores(&case, "c360_propensity", "customer_id"), topic_scores(&case, &leads_topic, "lead_id").await, gold_scores(&case, "m_dim.lead_score", "lead_id"));
    assert!(killed == uninterrupted, "scores after a replay killed -9 three times equal an uninterrupted replay");
    scorer = case.spawn(&args(&case, &["run", "propensity", "--http-port", "0"]), "propensity");
    let _ = scorer;
}

//! The lake on object storage: the CDC → bronze → leads chain and customer 360 written to
//! `s3://…` on the stack's S3-compatible server (moto) equal the source — the same
//! independent checks as on disk, the tables read back by delta-rs in Python — and equal,
//! table for table, row for row and column for column, a copy written to a local disk from
//! the same topics, both read back with delta-rs through `funnel`'s SQL catalog.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use funnel::lake::location::Lake;

fn run_args(case: &Case, processors: &[&str]) -> Vec<String> {
    let prefix = case.prefix.clone();
    let mut a: Vec<String> = vec!["run".into()];
    a.extend(processors.iter().map(|p| p.to_string()));
    a.extend(
        ["--http-port", "0", "--namespace", &prefix, "--cdc-topic-prefix", &prefix, "--gold-flush-ms", "300", "--flush-ms", "300", "--bronze-topics", &format!(r"^{prefix}\.(ecommerce|marketing)\.[a-z_]+$")]
            .iter()
            .map(|s| s.to_string()),
    );
    a
}

/// Every row of every table of the lake, as sorted JSON lines per table name.
async fn contents(lake: &Lake) -> BTreeMap<String, Vec<String>> {
    let catalog = funnel::lake::query::catalog(lake).await.unwrap();
    assert!(catalog.skipped.is_empty(), "{lake}: unreadable tables {:?}", catalog.skipped);
    let names = funnel::lake::query::rows(&catalog.ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").await.unwrap();
    let mut out = BTreeMap::new();
    for n in names {
        let name = n["table_name"].as_str().unwrap().to_string();
        let rows = funnel::lake::query::rows(&catalog.ctx, &format!("SELECT * FROM {name}")).await.unwrap();
        let mut lines: Vec<String> = rows.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        lines.sort();
        out.insert(name, lines);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_on_s3_equals_the_source_and_a_local_disk_copy_of_the_same_topics() {
    deltalake::aws::register_handlers(None);
    let mut case = Case::new("lakes3").await;
    case.use_object_lake();
    let s3 = Lake::parse(&case.lake_uri).unwrap();
    case.run_ok(&["seed", "olist", "--synthetic-scale", "1"]);
    case.spawn(&case.cdc_args(), "cdc");
    let groups: [&[&str]; 3] = [&["bronze"], &["seller-metrics", "leads", "leads-gold"], &["domain", "c360", "lake"]];
    let logs = ["bronze", "leads", "c360"];
    let mut procs: Vec<usize> = (0..3).map(|i| case.spawn(&run_args(&case, groups[i]), logs[i])).collect();

    // Equal to the source, read from s3 by the independent checker (delta-rs in Python),
    // once every bronze table is in the bucket.
    let timeout = Duration::from_secs(600);
    let bronze: Vec<url::Url> = OLIST_TABLES.iter().map(|t| funnel::bronze::table_path(&s3, &format!("{}.{t}", case.prefix))).collect();
    wait_for(timeout, "every bronze table in the bucket", || async {
        for t in &bronze {
            if !funnel::lake::location::exists(t).await.unwrap_or(false) {
                return false;
            }
        }
        true
    })
    .await;
    // kill -9 with tables in the bucket, then source changes: the restarted sinks resume from
    // the offsets in the tables' Delta logs on S3, and bronze rebuilds its re-send filter from
    // the bucket.
    for (i, p) in procs.iter_mut().enumerate() {
        case.kill9(*p);
        *p = case.spawn(&run_args(&case, groups[i]), logs[i]);
    }
    let pg = case.pg().await;
    pg.batch_execute("UPDATE ecommerce.customers SET customer_city = 'Recife (s3)' WHERE customer_id IN (SELECT customer_id FROM ecommerce.customers ORDER BY 1 LIMIT 25)").await.unwrap();
    for r in case.wait_checks_equal("bronze", OLIST_TABLES, &[], timeout, "bronze").await {
        assert_complete(&r);
        assert!(r["path"].as_str().unwrap().starts_with("s3://"), "{r}");
    }
    let leads = case.wait_checks_equal("leads", &["gold"], &["--namespace", &case.prefix], timeout, "leads").await;
    assert!(leads[0]["gold_rows"].as_i64().unwrap() > 0, "{:?}", leads[0]);
    let c360 = case.wait_checks_equal("c360", &["gold"], &["--namespace", &case.prefix], timeout, "c360").await;
    assert!(c360[0]["gold_rows"].as_i64().unwrap() > 0, "{:?}", c360[0]);
    // Nothing on local disk: the tables are in the bucket only.
    for layer in ["bronze", "silver", "gold"] {
        assert!(!case.lake.path().join(layer).exists(), "{layer}/ was written to the local disk");
    }

    // The same topics written to a local disk by the same sinks, to the end and out.
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    for p in procs {
        case.kill9(p);
    }
    let local_dir = tempfile::tempdir().unwrap();
    let mut copy = run_args(&case, &["bronze", "leads-gold", "lake"]);
    copy.extend(["--until-caught-up".into(), "--lake-dir".into(), local_dir.path().to_string_lossy().into_owned()]);
    case.run_ok(&copy.iter().map(String::as_str).collect::<Vec<_>>());
    let local = Lake::local(local_dir.path()).unwrap();

    let (on_s3, on_disk) = (contents(&s3).await, contents(&local).await);
    let names = |c: &BTreeMap<String, Vec<String>>| c.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&on_s3), names(&on_disk), "the same tables on s3 and on disk");
    for want in ["gold_c360", "gold_m_dim_lead", "silver_c360_customer", "silver_c360_order"] {
        assert!(on_s3.contains_key(want), "{want} missing from {:?}", names(&on_s3));
    }
    assert_eq!(on_s3.keys().filter(|k| k.starts_with("bronze_")).count(), OLIST_TABLES.len());
    for (table, rows) in &on_s3 {
        let disk = &on_disk[table];
        assert!(!rows.is_empty(), "{table} is empty");
        assert_eq!(rows.len(), disk.len(), "{table}: rows on s3 and on disk");
        let differ = rows.iter().zip(disk).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{table}: {differ} rows differ between s3 and disk, e.g. {:?}", rows.iter().zip(disk).find(|(a, b)| a != b));
        eprintln!("{table}: {} rows, equal on s3 and on disk", rows.len());
    }

    // `funnel sql` answers over the s3 lake.
    let out = case.run_ok(&["sql", "--format", "json", "SELECT count(*) AS n FROM gold_m_dim_lead"]);
    let n: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(n["n"].as_u64(), Some(on_s3["gold_m_dim_lead"].len() as u64), "{out}");
}

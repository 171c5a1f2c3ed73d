//! `funnel summary`: records per topic and rows per bronze table, aligned.

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::config::Endpoints;

/// Records on a topic, counted by reading it (read_committed): transaction markers and
/// aborted records, which offsets alone would include, are not counted. Tombstones are
/// returned separately.
pub fn count_records(brokers: &str, topic: &str) -> Result<(u64, u64)> {
    let (mut records, mut tombstones) = (0u64, 0u64);
    crate::state::read_topic(brokers, topic, |_, v| match v {
        Some(_) => records += 1,
        None => tombstones += 1,
    })?;
    Ok((records, tombstones))
}

/// Rows in a Delta table (from the log's file statistics, no data read).
pub async fn delta_rows(url: &url::Url) -> Result<Option<i64>> {
    let Some(table) = crate::lake::offsets::open_existing(url).await? else { return Ok(None) };
    let snapshot = table.snapshot()?;
    let mut rows = 0i64;
    for add in snapshot.log_data().into_iter() {
        rows += add.num_records().unwrap_or(0) as i64;
    }
    Ok(Some(rows))
}

/// Source rows, topic records and bronze rows of every CDC table under `prefix`.
pub async fn print(ep: &Endpoints, prefix: &str) -> Result<()> {
    let lake = ep.lake()?;
    let pg = crate::olist::db::connect(&ep.source_pg_url).await.ok();
    let mut topics: Vec<String> = crate::kafka::admin::list_topics(&ep.brokers)?.into_iter().filter(|t| t.starts_with(&format!("{prefix}."))).collect();
    topics.sort();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["source table", "source rows", "topic", "change events", "tombstones", "bronze rows", "of which re-read by loads"]);
    let ctx = crate::lake::query::context(&lake).await?;
    for t in topics {
        let source = t.trim_start_matches(&format!("{prefix}.")).to_string();
        let rows = match &pg {
            Some(pg) => pg.query_one(&format!("SELECT count(*) FROM {source}"), &[]).await.map(|r| r.get::<_, i64>(0).to_string()).unwrap_or("-".into()),
            None => "-".into(),
        };
        let (records, tombstones) = count_records(&ep.brokers, &t)?;
        let bronze = delta_rows(&crate::bronze::table_path(&lake, &t)).await?.map(|n| n.to_string()).unwrap_or("-".into());
        // Rows of the loader's re-snapshots (POST /load), marked with their load id.
        let sql = format!("SELECT count(*) AS n FROM bronze_{} WHERE _source_load_id IS NOT NULL", t.replace(['.', '-'], "_"));
        let reread = crate::lake::query::rows(&ctx, &sql).await.ok().and_then(|r| r.first().and_then(|r| r.get("n").and_then(serde_json::Value::as_i64))).map(|n| n.to_string()).unwrap_or("-".into());
        table.add_row(vec![source, rows, t.clone(), records.to_string(), tombstones.to_string(), bronze, reread]);
    }
    println!("{table}");
    Ok(())
}

/// The lead pipeline's tables: silver staging, the gold lead dimension and its key figures.
pub async fn print_leads(lake: &crate::lake::location::Lake) -> Result<()> {
    let ctx = crate::lake::query::context(lake).await?;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["lake table", "rows", "what"]);
    for (name, what) in [
        ("silver_m_data_marketing_qualified_lead", "MQLs staged by the loader"),
        ("silver_m_data_closed_deal", "closed deals staged by the loader"),
        ("gold_m_dim_lead", "the lead dimension"),
    ] {
        let rows = crate::lake::query::rows(&ctx, &format!("SELECT count(*) AS n FROM {name}")).await.ok().and_then(|r| r.first().and_then(|r| r.get("n").and_then(serde_json::Value::as_i64)));
        table.add_row(vec![name.to_string(), rows.map(|n| n.to_string()).unwrap_or("-".into()), what.to_string()]);
    }
    println!("{table}");
    let figures = crate::lake::query::rows(
        &ctx,
        "SELECT count(*) AS leads, sum(CASE WHEN is_closed_deal = 'Is closed deal' THEN 1 ELSE 0 END) AS closed, \
         count(seller_fk) AS with_seller, sum(number_of_orders_lifetime) AS orders, round(sum(revenue_lifetime), 2) AS revenue FROM gold_m_dim_lead",
    )
    .await;
    if let Ok(Some(f)) = figures.map(|r| r.into_iter().next()) {
        let v = |k: &str| f.get(k).map(|v| v.to_string()).unwrap_or("-".into());
        println!(
            "gold m_dim.lead: {} leads, {} closed deals, {} with a known seller ({} lifetime orders, revenue {}); read it with any Delta reader at {}",
            v("leads"),
            v("closed"),
            v("with_seller"),
            v("orders"),
            v("revenue"),
            crate::leads::gold_path(lake)
        );
    }
    Ok(())
}

/// The customer 360 domain topics: what the domain processor announced.
pub fn print_domain(brokers: &str) -> Result<()> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["domain topic", "records", "tombstones"]);
    for t in ["dom.customer.profile.upsert.v1", "dom.order.created.v1", "dom.order.updated.v1"] {
        let (records, tombstones) = count_records(brokers, t)?;
        table.add_row(vec![t.to_string(), records.to_string(), tombstones.to_string()]);
    }
    println!("{table}");
    Ok(())
}

/// Orders counted in gold `c360` (Σ order_count); 0 before the table exists.
pub async fn c360_orders(lake: &crate::lake::location::Lake) -> Result<i64> {
    if !crate::lake::location::exists(&crate::c360::table_paths(lake)[2]).await? {
        return Ok(0);
    }
    let ctx = crate::lake::query::context(lake).await?;
    let rows = crate::lake::query::rows(&ctx, "SELECT CAST(COALESCE(SUM(order_count), 0) AS BIGINT) AS n FROM gold_c360").await?;
    Ok(rows.first().and_then(|r| r.get("n")).and_then(serde_json::Value::as_i64).unwrap_or(0))
}

/// Customer 360 from gold `c360`: customers, orders and revenue per lifecycle stage and segment.
pub async fn print_c360(lake: &crate::lake::location::Lake) -> Result<()> {
    let ctx = crate::lake::query::context(lake).await?;
    let batches = crate::lake::query::batches(
        &ctx,
        "SELECT lifecycle_stage, segment, count(*) AS customers, sum(order_count) AS orders, round(sum(revenue), 2) AS revenue \
         FROM gold_c360 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .await?;
    println!("gold c360 (sql/c360 on DataFusion; the same view is in Redis behind the web page)\n{}", crate::lake::query::to_table(&batches)?);
    Ok(())
}

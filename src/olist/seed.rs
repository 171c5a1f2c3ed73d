//! `funnel seed olist`: create the olist database and load it, from the real CSV files where
//! the data folder has them and from the synthetic generator for the rest.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::SinkExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::synthetic::{self, World};
use super::tables::{self, Table, TABLES};
use super::db;

const SEED: u64 = 0x0115_7000;

pub struct SeedOptions {
    pub dir: Option<PathBuf>,
    pub synthetic_scale: u32,
}

/// Rows loaded per table, and where they came from.
pub struct SeedReport {
    pub tables: Vec<(String, u64, &'static str)>,
}

enum Source {
    File(PathBuf),
    Generated(String),
}

pub async fn seed(pg_url: &str, opts: &SeedOptions) -> Result<SeedReport> {
    let dbname = db::database_name(pg_url)?;
    db::ensure_database(&db::with_database(pg_url, "postgres")?, &dbname).await?;
    let client = db::connect(pg_url).await?;
    let slots: Vec<String> = client
        .query("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !slots.is_empty() {
        tracing::warn!(?slots, "replication slots exist on this database; reseeding recreates every table, restart CDC with `funnel cdc reset`");
    }
    client.batch_execute(&tables::create_script()).await.context("creating olist schemas")?;

    let sources = plan_sources(opts)?;
    let bar = ProgressBar::new(TABLES.len() as u64);
    bar.set_style(ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} tables  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut report = vec![];
    for table in TABLES {
        let source = sources.get(&table.qualified()).context("no source planned for table")?;
        bar.set_message(format!("loading {}", table.qualified()));
        let (rows, origin) = match source {
            Source::File(path) => (copy_in(&client, table, open_csv(path)?).await?, "olist CSV"),
            Source::Generated(csv) => (copy_in(&client, table, Box::new(std::io::Cursor::new(csv.clone().into_bytes()))).await?, "synthetic"),
        };
        if table.name == "customers" {
            // olist's own customers file has no addresses: every person gets the seed's one.
            let sql = format!("UPDATE ecommerce.customers SET customer_email = customer_unique_id || '@{}' WHERE customer_email IS NULL", super::synthetic::EMAIL_DOMAIN);
            client.execute(&sql, &[]).await.context("giving customers their seed e-mail addresses")?;
        }
        report.push((table.qualified(), rows, origin));
        bar.inc(1);
    }
    client.batch_execute("ANALYZE").await?;
    bar.finish_with_message("done");
    Ok(SeedReport { tables: report })
}

fn open_csv(path: &Path) -> Result<Box<dyn Read + Send>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) })
}

/// Which tables come from files and which are generated.
fn plan_sources(opts: &SeedOptions) -> Result<BTreeMap<String, Source>> {
    let mut out: BTreeMap<String, Source> = BTreeMap::new();
    let world: World = match &opts.dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("data folder {} does not exist", dir.display());
            }
            for t in TABLES {
                let path = dir.join(t.csv);
                if path.exists() {
                    out.insert(t.qualified(), Source::File(path));
                }
            }
            for needed in ["ecommerce.order_payments", "ecommerce.sellers", "ecommerce.products"] {
                if !out.contains_key(needed) {
                    bail!("{} lacks the file for {needed}; the generator needs payments, sellers and products to refer to", dir.display());
                }
            }
            world_from_files(dir)?
        }
        None => {
            let (world, reference) = synthetic::reference_tables(opts.synthetic_scale, SEED);
            for (name, csv) in reference {
                out.insert(name.to_string(), Source::Generated(csv));
            }
            world
        }
    };
    for (name, csv) in synthetic::commerce_tables(&world, SEED + 1) {
        out.entry(name.to_string()).or_insert(Source::Generated(csv));
    }
    Ok(out)
}

/// Order totals, seller ids and product ids from the real files.
fn world_from_files(dir: &Path) -> Result<World> {
    let mut order_totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut rdr = csv::Reader::from_reader(open_csv(&dir.join("olist_order_payments_dataset.csv.gz"))?);
    for rec in rdr.records() {
        let rec = rec.context("reading payments")?;
        let (Some(id), Some(value)) = (rec.get(0), rec.get(4)) else { bail!("payments row without order_id/payment_value") };
        let cents = crate::avro::column::parse_decimal(value, 2).with_context(|| format!("payment_value {value:?}"))? as i64;
        *order_totals.entry(id.to_string()).or_default() += cents;
    }
    let first_column = |file: &str| -> Result<Vec<String>> {
        let mut rdr = csv::Reader::from_reader(open_csv(&dir.join(file))?);
        let mut ids: Vec<String> = rdr.records().map(|r| r.map(|r| r.get(0).unwrap_or_default().to_string())).collect::<Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    };
    Ok(World { order_totals, seller_ids: first_column("olist_sellers_dataset.csv.gz")?, product_ids: first_column("olist_products_dataset.csv.gz")? })
}

/// Stream CSV (with header) into the table with COPY; returns the rows loaded. The header names
/// the columns, so a file may leave out columns funnel added (olist's customers have no e-mail).
async fn copy_in(client: &tokio_postgres::Client, table: &Table, reader: Box<dyn Read + Send>) -> Result<u64> {
    let mut reader = std::io::BufReader::new(reader);
    let mut header = String::new();
    std::io::BufRead::read_line(&mut reader, &mut header).with_context(|| format!("reading the CSV header for {}", table.qualified()))?;
    let header = header.trim_start_matches('\u{feff}').trim();
    if header.is_empty() || !header.split(',').all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '"')) {
        anyhow::bail!("{}: the CSV header {header:?} is not a list of column names", table.qualified());
    }
    let mut reader: Box<dyn Read + Send> = Box::new(reader);
    let sql = format!("COPY {} ({header}) FROM STDIN WITH (FORMAT csv, HEADER false)", table.qualified());
    let sink = client.copy_in::<_, Bytes>(&sql).await.with_context(|| format!("starting COPY into {}", table.qualified()))?;
    futures::pin_mut!(sink);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).with_context(|| format!("reading CSV for {}", table.qualified()))?;
        if n == 0 {
            break;
        }
        sink.send(Bytes::copy_from_slice(&buf[..n])).await.with_context(|| format!("COPY into {}", table.qualified()))?;
    }
    let rows = sink.finish().await.with_context(|| format!("finishing COPY into {}", table.qualified()))?;
    Ok(rows)
}

//! Shared fixtures: every test gets its own database, topic prefix, connector name and lake
//! directory on the stack `.ci/run` starts (broker, registry, Postgres), so tests never see
//! each other's data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub mod campaigns;
pub mod mailbox;
pub mod relay_sink;

/// Every table of the olist source, as CDC names them (schema.table).
pub const OLIST_TABLES: &[&str] = &[
    "ecommerce.customers",
    "ecommerce.orders",
    "ecommerce.order_items",
    "ecommerce.order_payments",
    "ecommerce.order_reviews",
    "ecommerce.products",
    "ecommerce.sellers",
    "ecommerce.product_category_name_translation",
    "marketing.marketing_qualified_leads",
    "marketing.closed_deals",
];

pub struct Stack {
    pub brokers: String,
    pub registry: String,
    pub pg_admin: String,
    pub redis: String,
    pub python: PathBuf,
}

impl Stack {
    pub fn from_env() -> Self {
        let tools = std::env::var("FUNNEL_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join(".cache/funnel-tools"));
        Stack {
            brokers: std::env::var("FUNNEL_BROKERS").unwrap_or("127.0.0.1:19092".into()),
            registry: std::env::var("FUNNEL_SCHEMA_REGISTRY_URL").unwrap_or("http://127.0.0.1:18081".into()),
            pg_admin: "postgres://postgres@127.0.0.1:15432/postgres".into(),
            redis: std::env::var("FUNNEL_REDIS_URL").unwrap_or("redis://127.0.0.1:16379/".into()),
            python: tools.join("venv/bin/python"),
        }
    }
}

pub fn olist_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/olist");
    d.join("olist_order_payments_dataset.csv.gz").exists().then_some(d)
}

pub struct Case {
    pub name: String,
    pub db_url: String,
    pub prefix: String,
    pub lake: tempfile::TempDir,
    /// The lake every spawned funnel and the checker use: `lake` unless the case moved it to
    /// the stack's object store (`use_object_lake`).
    pub lake_uri: String,
    pub stack: Stack,
    /// The API token of this case's HTTP services (`FUNNEL_API_TOKEN` of every spawned funnel).
    pub token: String,
    /// The relay's Fernet key (`ENCRYPTION_KEY` of every spawned funnel).
    pub encryption_key: String,
    children: Vec<Child>,
}

impl Case {
    /// A fresh database `t_<name>` and a unique topic prefix / connector name.
    pub async fn new(name: &str) -> Case {
        let stack = Stack::from_env();
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
        let db = format!("t_{name}");
        let admin = funnel::olist::db::connect(&stack.pg_admin).await.expect("Postgres of the test stack (run `funnel stack up`)");
        admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap();
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&db]).await.unwrap();
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\"")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{db}\"")).await.unwrap();
        let lake = tempfile::tempdir().unwrap();
        Case {
            lake_uri: lake.path().to_string_lossy().into_owned(),
            name: format!("{name}{stamp}"),
            db_url: funnel::olist::db::with_database(&stack.pg_admin, &db).unwrap(),
            prefix: format!("{name}{stamp}"),
            lake,
            stack,
            token: format!("test-token-{name}-{stamp}-{:x}", std::process::id()),
            encryption_key: fernet::Fernet::generate_key(),
            children: vec![],
        }
    }

    /// Put this case's lake on the stack's S3-compatible server (`funnel stack up` starts
    /// moto and creates its bucket; `stack env` exports the AWS_* settings), below a prefix of
    /// its own.
    pub fn use_object_lake(&mut self) {
        self.lake_uri = format!("s3://{}/{}", funnel::config::STACK_S3_BUCKET, self.prefix);
    }

    pub fn funnel(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_funnel"));
        c.env("FUNNEL_BROKERS", &self.stack.brokers)
            .env("FUNNEL_SCHEMA_REGISTRY_URL", &self.stack.registry)
            .env("FUNNEL_SOURCE_PG_URL", &self.db_url)
            .env("FUNNEL_LAKE_DIR", &self.lake_uri)
            .env("FUNNEL_REDIS_URL", &self.stack.redis)
            .env("FUNNEL_API_TOKEN", &self.token)
            .env("ENCRYPTION_KEY", &self.encryption_key)
            .env("FUNNEL_LOG", std::env::var("TEST_FUNNEL_LOG").unwrap_or("warn,funnel=info,deltalake_core::operations::merge=error".into()));
        c
    }

    /// An HTTP client that sends this case's API token with every request.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", self.token).parse().unwrap());
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }

    /// An HTTP client that sends this case's credentials as HTTP Basic (user funnel, the token
    /// as password), as the OMS does with the relay.
    pub fn basic_http(&self) -> reqwest::Client {
        use base64::Engine;
        let mut headers = reqwest::header::HeaderMap::new();
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("funnel:{}", self.token));
        headers.insert(reqwest::header::AUTHORIZATION, format!("Basic {creds}").parse().unwrap());
        reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(60)).build().unwrap()
    }

    /// Run a funnel command to completion (10 minutes at most: a hang fails the test, not CI).
    pub fn run_ok(&self, args: &[&str]) -> String {
        self.run_ok_env(args, &[])
    }

    /// `run_ok` with extra environment variables.
    pub fn run_ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let dir = self.lake.path();
        let (out_path, err_path) = (dir.join("run_ok.out"), dir.join("run_ok.err"));
        let mut child = self
            .funnel()
            .envs(env.iter().copied())
            .args(args)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("running funnel");
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (out, err) = (std::fs::read_to_string(&out_path).unwrap_or_default(), std::fs::read_to_string(&err_path).unwrap_or_default());
        match status {
            Some(s) if s.success() => out,
            Some(s) => panic!("funnel {args:?} failed ({s}):\n{out}\n{err}"),
            None => panic!("funnel {args:?} did not finish within 10 minutes:\n{out}\n{err}"),
        }
    }

    pub fn cdc_args(&self) -> Vec<String> {
        ["run", "cdc", "--http-port", "0", "--cdc-name", &self.name, "--cdc-topic-prefix", &self.prefix, "--cdc-publication", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub fn bronze_args(&self) -> Vec<String> {
        ["run", "bronze", "--http-port", "0", "--bronze-topics", &format!(r"^{}\..+", self.prefix), "--flush-ms", "300"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Start a processor in the background; its output goes to `<lake>/<log>.log`.
    pub fn spawn(&mut self, args: &[String], log: &str) -> usize {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(self.lake.path().join(format!("{log}.log"))).unwrap();
        let child = self.funnel().args(args).stdout(Stdio::from(f.try_clone().unwrap())).stderr(Stdio::from(f)).spawn().expect("spawn funnel");
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn kill9(&mut self, idx: usize) {
        let c = &mut self.children[idx];
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.lake.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        funnel::olist::db::connect(&self.db_url).await.unwrap()
    }

    pub async fn cdc_state(&self) -> Option<funnel::cdc::state::CdcState> {
        funnel::cdc::load_state(&self.stack.brokers, &self.stack.registry, &self.name).await.ok().flatten()
    }

    pub async fn cdc_phase(&self) -> Option<String> {
        self.cdc_state().await.map(|s| format!("{:?}", s.phase))
    }

    /// Wait until the connector finished its snapshot.
    pub async fn wait_streaming(&self, timeout: Duration) {
        wait_for(timeout, "CDC snapshot to complete", || async { self.cdc_phase().await.as_deref() == Some("Streaming") }).await;
    }

    /// Wait until the slot confirmed everything written before now (all earlier commits emitted).
    pub async fn wait_cdc_caught_up(&self, timeout: Duration) {
        let pg = self.pg().await;
        let target: String = pg.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
        let slot_like = format!("funnel\\_{}\\_%", self.name);
        wait_for(timeout, "CDC to catch up with the WAL", || async {
            pg.query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE $1 AND confirmed_flush_lsn >= $2::text::pg_lsn",
                &[&slot_like, &target],
            )
            .await
            .ok()
            .flatten()
            .is_some()
        })
        .await;
    }

    /// Run the bronze writer until it has consumed everything (a fresh process each time).
    pub fn drain_bronze(&self) {
        let mut args = self.bronze_args();
        args.push("--until-caught-up".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_ok(&args);
    }

    /// The independent Python checker (confluent-kafka / delta-rs) for `tables`.
    pub fn check(&self, what: &str, tables: &[&str]) -> Vec<Json> {
        self.check_with(what, tables, &[])
    }

    pub fn check_with(&self, what: &str, tables: &[&str], extra: &[&str]) -> Vec<Json> {
        let out = Command::new(&self.stack.python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/funnel_check.py"))
            .args([what, "--pg", &self.db_url, "--brokers", &self.stack.brokers, "--registry", &self.stack.registry, "--prefix", &self.prefix, "--redis", &self.stack.redis])
            .arg("--lake")
            .arg(&self.lake_uri)
            .args(extra)
            .args(tables)
            .output()
            .expect("python checker (installed by `funnel stack up`)");
        assert!(out.status.success(), "checker {what} failed ({}):\n{}\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("checker JSON")).collect()
    }
}

impl Case {
    /// Every record of `topic` decoded through the registry, as JSON, in read order
    /// (tombstones skipped).
    pub async fn topic_json(&self, topic: &str) -> Vec<Json> {
        let registry = funnel::registry::RegistryClient::new(&self.stack.registry);
        let (b, t) = (self.stack.brokers.clone(), topic.to_string());
        let raw = tokio::task::spawn_blocking(move || {
            let mut out = vec![];
            funnel::state::read_topic(&b, &t, |_, v| out.extend(v.map(<[u8]>::to_vec))).expect("reading the topic");
            out
        })
        .await
        .unwrap();
        let mut out = vec![];
        for v in raw {
            let (_, value) = funnel::avro::serialization::decode(&registry, &v).await.expect("record decodes with its registered schema");
            out.push(Json::try_from(value).expect("record as JSON"));
        }
        out
    }

    /// Run the checker until every result shows no missing, extra or different row; on
    /// timeout fail with the last results and the tail of processor log `log`.
    pub async fn wait_checks_equal(&self, what: &str, tables: &[&str], extra: &[&str], timeout: Duration, log: &str) -> Vec<Json> {
        self.wait_checks_equal_when_quiet(what, tables, extra, timeout, log, &[]).await
    }

    /// `wait_checks_equal`, each check only once the ends of `quiet` topics stood still for
    /// a few seconds. A check of the real data reads whole topics, tables and Redis and
    /// takes a core for tens of seconds: run while the pipeline still produces, it only
    /// slows the pipeline down and fails. Between checks the wait is at least as long as
    /// the check took, so the checker never takes more than half a core.
    pub async fn wait_checks_equal_when_quiet(&self, what: &str, tables: &[&str], extra: &[&str], timeout: Duration, log: &str, quiet: &[String]) -> Vec<Json> {
        self.wait_checks_equal_when_settled(what, tables, extra, timeout, log, &[], quiet).await
    }

    /// `wait_checks_equal_when_quiet`, each check also only once every `(group, topics)` of
    /// `caught_up` has committed its inputs to their end: outputs that stand still while the
    /// processor restores its state after a kill are not the final ones.
    pub async fn wait_checks_equal_when_settled(&self, what: &str, tables: &[&str], extra: &[&str], timeout: Duration, log: &str, caught_up: &[(String, Vec<String>)], quiet: &[String]) -> Vec<Json> {
        let deadline = Instant::now() + timeout;
        let n = |r: &Json, k: &str| r.get(k).and_then(Json::as_i64).unwrap_or(-1);
        loop {
            for (group, topics) in caught_up {
                self.wait_group_caught_up(group, topics, deadline).await;
            }
            if !quiet.is_empty() {
                self.wait_topics_quiet(quiet, QUIET, deadline).await;
            }
            let t0 = Instant::now();
            let r = self.check_with(what, tables, extra);
            let took = t0.elapsed();
            if r.iter().all(|r| n(r, "missing") == 0 && n(r, "extra") == 0 && n(r, "different") == 0) {
                return r;
            }
            let counts: Vec<String> = r.iter().map(|r| format!("{}: missing {} extra {} different {}", r.get("check").or(r.get("table")).unwrap_or(&Json::Null), n(r, "missing"), n(r, "extra"), n(r, "different"))).collect();
            eprintln!("{what} check took {:.1} s, not equal yet ({})", took.as_secs_f64(), counts.join("; "));
            if Instant::now() >= deadline {
                // `log` may name several processes, comma-separated: each one's tail.
                let tails: Vec<String> = log
                    .split(',')
                    .map(|name| {
                        let text = self.log(name);
                        let tail: Vec<&str> = text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                        format!("── {name} ──\n{}", tail.join("\n"))
                    })
                    .collect();
                panic!("{what} {tables:?} never matched the reference: {r:?}\n{}", tails.join("\n"));
            }
            tokio::time::sleep(took.max(Duration::from_secs(2))).await;
        }
    }

    /// The sum of the ends (high watermarks) of every partition of `topic`.
    pub fn topic_end(&self, topic: &str) -> i64 {
        use rdkafka::consumer::BaseConsumer;
        let consumer: BaseConsumer = funnel::kafka::client_config(&self.stack.brokers).create().expect("consumer for watermarks");
        let n = funnel::kafka::admin::partition_count(&self.stack.brokers, topic).unwrap_or(0);
        let parts: Vec<(String, i32)> = (0..n).map(|p| (topic.to_string(), p)).collect();
        funnel::kafka::watermarks(&consumer, &parts).map(|w| w.iter().map(|(_, _, _, hi)| hi).sum()).unwrap_or(0)
    }

    /// Wait until consumer group `group` has committed every partition of `topics` up to its
    /// end, or until `deadline`. Its inputs are written in transactions, so a partition read
    /// to its end still shows one offset of lag: the commit marker after its last record;
    /// an unread record shows two or more.
    pub async fn wait_group_caught_up(&self, group: &str, topics: &[String], deadline: Instant) {
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        let consumer: BaseConsumer = funnel::kafka::client_config(&self.stack.brokers).set("group.id", group).create().expect("consumer for offsets");
        let mut parts = vec![];
        for t in topics {
            let n = funnel::kafka::admin::partition_count(&self.stack.brokers, t).unwrap_or(0);
            parts.extend((0..n).map(|p| (t.clone(), p)));
        }
        let behind = |c: &BaseConsumer| -> Option<i64> {
            let ends = funnel::kafka::watermarks(c, &parts).ok()?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            for (t, p) in &parts {
                tpl.add_partition(t, *p);
            }
            let committed = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
            let mut behind = 0;
            for (t, p, _, hi) in ends {
                let at = match committed.find_partition(&t, p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) => o,
                    _ => 0,
                };
                if hi - at > 1 {
                    behind += hi - at;
                }
            }
            Some(behind)
        };
        while Instant::now() < deadline {
            if behind(&consumer) == Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Wait until the high watermarks of every partition of `topics` stayed the same for
    /// `still`, or until `deadline` (the caller's check then reports what is missing). A
    /// `topics` entry naming a directory of this case's lake (`gold/c360`) waits for that
    /// Delta table's log instead: no new commit for `still`.
    pub async fn wait_topics_quiet(&self, topics: &[String], still: Duration, deadline: Instant) {
        use rdkafka::consumer::BaseConsumer;
        let consumer: BaseConsumer = funnel::kafka::client_config(&self.stack.brokers).create().expect("consumer for watermarks");
        let mut parts = vec![];
        let mut logs = vec![];
        for t in topics {
            if t.contains('/') {
                logs.push(self.lake.path().join(t).join("_delta_log"));
                continue;
            }
            let n = funnel::kafka::admin::partition_count(&self.stack.brokers, t).unwrap_or(0);
            parts.extend((0..n).map(|p| (t.clone(), p)));
        }
        let ends = |c: &BaseConsumer| {
            let mut ends = funnel::kafka::watermarks(c, &parts).map(|w| w.into_iter().map(|(_, _, _, hi)| hi).collect::<Vec<_>>()).ok()?;
            ends.extend(logs.iter().map(|d| std::fs::read_dir(d).map(|r| r.count() as i64).unwrap_or(-1)));
            Some(ends)
        };
        let mut last = ends(&consumer);
        let mut since = Instant::now();
        while since.elapsed() < still && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = ends(&consumer);
            if now != last || now.is_none() {
                last = now;
                since = Instant::now();
            }
        }
    }
}

/// How long the outputs must stand still before a check of the real data: longer than
/// the pauses of a loaded engine between batches (5 s was not, and each premature check
/// of the olist customers cost a core for one to two minutes).
const QUIET: Duration = Duration::from_secs(15);

impl Drop for Case {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failed test's process logs outlive its temporary lake, for the post-mortem.
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join("funnel-failed-tests").join(&self.prefix);
            if std::fs::create_dir_all(&keep).is_ok() {
                for entry in std::fs::read_dir(self.lake.path()).into_iter().flatten().flatten() {
                    if entry.path().extension().is_some_and(|e| e == "log") {
                        let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
                    }
                }
                eprintln!("process logs kept in {}", keep.display());
            }
        }
    }
}

/// A TCP port nobody listens on right now.
/// Assert that `resp` is funnel's JSON error with `status`; returns its message.
pub async fn json_error(resp: reqwest::Response, status: u16, what: &str) -> String {
    assert_eq!(resp.status(), status, "{what}");
    let body: Json = resp.json().await.unwrap_or_else(|e| panic!("{what}: the error body is not JSON: {e}"));
    assert_eq!(body["error_code"], status, "{what}: {body}");
    body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message: {body}")).to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Assert a checker result shows the table equal to the source (re-sent events, recognised
/// by their source position, allowed) with no duplicate Kafka position in the lake.
pub fn assert_complete(r: &Json) {
    let n = |k: &str| r.get(k).and_then(Json::as_i64).unwrap_or(-1);
    assert_eq!((n("missing"), n("extra"), n("different")), (0, 0, 0), "differs from source: {r}");
    assert_eq!(n("expected_rows"), n("actual_rows"), "{r}");
    if r.get("duplicate_offsets").is_some() {
        assert_eq!(n("duplicate_offsets"), 0, "duplicate (_kafka_partition, _kafka_offset): {r}");
    }
    if r.get("decode_errors").is_some() {
        assert_eq!(n("decode_errors"), 0, "{r}");
        assert_eq!(n("out_of_order"), 0, "events of a key out of commit order: {r}");
    }
}

/// Assert a checker result shows the table equal to the source, with no duplicates.
pub fn assert_equal_to_source(r: &Json) {
    let n = |k: &str| r.get(k).and_then(Json::as_i64).unwrap_or(-1);
    assert_eq!((n("missing"), n("extra"), n("different")), (0, 0, 0), "differs from source: {r}");
    assert_eq!(n("expected_rows"), n("actual_rows"), "{r}");
    assert_eq!(n("duplicate_events"), 0, "a change event appears twice: {r}");
    if r.get("duplicate_offsets").is_some() {
        assert_eq!(n("duplicate_offsets"), 0, "duplicate (_kafka_partition, _kafka_offset): {r}");
    }
    if r.get("decode_errors").is_some() {
        assert_eq!(n("decode_errors"), 0, "{r}");
        assert_eq!(n("out_of_order"), 0, "events of a key out of commit order: {r}");
    }
}

/// `funnel sql --format json` prints one object per line.
pub fn json_lines(out: &str) -> Vec<Json> {
    out.lines().filter(|l| l.trim_start().starts_with('{')).map(|l| serde_json::from_str(l).expect("a JSON row")).collect()
}

/// What a customer 360 run left in gold `c360`, the consolidated topic (latest per key) and
/// Redis, every column, with the evaluation time and the epoch left out: a replay evaluates in
/// bigger batches, so at later event times, and begins a new epoch; stages, segments and
/// aggregates themselves must not differ.
pub struct C360Snapshot {
    pub gold: BTreeMap<String, Json>,
    pub topic: BTreeMap<String, Json>,
    pub redis: BTreeMap<String, BTreeMap<String, String>>,
    /// The epoch the gold table's rows carry (all the same).
    pub epoch: i64,
}

impl C360Snapshot {
    pub async fn take(case: &Case, consolidated_topic: &str, redis_prefix: &str) -> C360Snapshot {
        let strip = |mut v: Json| {
            if let Some(o) = v.as_object_mut() {
                o.remove("stream_time");
                o.remove("epoch");
            }
            v
        };
        let rows = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT * FROM gold_c360"]));
        let epochs: std::collections::BTreeSet<i64> = rows.iter().map(|r| r["epoch"].as_i64().unwrap()).collect();
        assert_eq!(epochs.len(), 1, "one epoch per state: {epochs:?}");
        let epoch = *epochs.iter().next().unwrap();
        let gold = rows.into_iter().map(|r| (r["customer_id"].as_str().unwrap().to_string(), strip(r))).collect();
        let topic = case.topic_json(consolidated_topic).await.into_iter().map(|r| (r["customer_id"].as_str().unwrap().to_string(), strip(r))).collect();
        let client = redis::Client::open(case.stack.redis.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let ids: Vec<String> = redis::cmd("ZRANGE").arg(format!("{redis_prefix}:by_revenue")).arg(0).arg(-1).query_async(&mut con).await.unwrap();
        let mut redis = BTreeMap::new();
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(format!("{redis_prefix}:customer:{id}"));
            }
            let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut con).await.unwrap();
            for (id, mut h) in chunk.iter().zip(hashes) {
                for f in ["stream_time", "_v_time", "epoch", "_v_epoch"] {
                    h.remove(f);
                }
                redis.insert(id.clone(), h);
            }
        }
        C360Snapshot { gold, topic, redis, epoch }
    }

    /// Assert every view equals `other`'s row for row, naming the first differing customers.
    pub fn assert_same_as(&self, other: &C360Snapshot, what: &str) {
        fn same<V: PartialEq + std::fmt::Debug>(view: &str, what: &str, a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let differ: Vec<_> = keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).collect();
            let shown: Vec<String> = differ.iter().take(3).map(|k| format!("{k}: {:?} vs {:?}", a.get(*k), b.get(*k))).collect();
            assert!(differ.is_empty(), "{view} after {what}: {} of {} customers differ, e.g.\n{}", differ.len(), b.len(), shown.join("\n"));
        }
        same("gold c360", what, &self.gold, &other.gold);
        same("consolidated topic", what, &self.topic, &other.topic);
        same("Redis", what, &self.redis, &other.redis);
    }
}

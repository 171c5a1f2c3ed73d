//! The command line's arguments (clap): every command, its flags and their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use funnel::config::Endpoints;
use funnel::stack::StackDirs;

/// funnel — Kafka-native stream processing for marketing data.
///
/// Every hop runs through Kafka-API topics with Avro values registered in a
/// Confluent-compatible Schema Registry. Start locally with:
///
///   funnel stack up                                  # broker, registry, Postgres, Redis
///   funnel seed olist --dir ../shared/data/olist     # or without --dir: synthetic data
///   funnel topics create                             # topics + schemas from topology/
///   funnel run cdc bronze                            # Postgres → topics → Delta
///   funnel demo                                      # all of the above, end to end
///
/// Endpoints come from flags or FUNNEL_* variables (`eval "$(funnel stack env)"`).
#[derive(Parser)]
#[command(name = "funnel", version, verbatim_doc_comment, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) endpoints: Endpoints,
    #[command(flatten)]
    pub(crate) dirs: StackDirs,
    /// Log filter (tracing EnvFilter syntax), e.g. info,funnel=debug.
    #[arg(long, env = "FUNNEL_LOG", default_value = "warn,funnel=info,deltalake_core::operations::merge=error", global = true)]
    pub(crate) log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Local stack without Docker: tansu broker, schema registry, Postgres (logical WAL), Redis.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Serve a Confluent-compatible Schema Registry backed by the `_schemas` topic.
    Registry {
        #[arg(long, default_value_t = funnel::config::DEFAULT_REGISTRY_PORT)]
        port: u16,
        /// The compacted topic holding the schemas (Confluent's kafkastore.topic).
        #[arg(long = "kafkastore-topic", default_value = funnel::registry::server::SCHEMAS_TOPIC)]
        topic: String,
    },
    /// Print the topology (processors, topics, delivery per hop) and its Mermaid diagram.
    Topology {
        /// Only print the Mermaid diagram.
        #[arg(long)]
        mermaid: bool,
        #[arg(long, default_value = ".")]
        topology_dir: PathBuf,
    },
    /// Topic administration from topology/.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Load source data.
    Seed {
        #[command(subcommand)]
        what: SeedWhat,
    },
    /// Run processors by name in this process until SIGTERM: `funnel run cdc bronze`.
    Run(RunArgs),
    /// Ask a running loader (`funnel run loader`) to re-snapshot the marketing tables; prints
    /// the load event (per-table records, duration, integrity) and fails when the load failed.
    /// Sends the API token (FUNNEL_API_TOKEN, FUNNEL_API_TOKEN_FILE or .funnel/api-token).
    Load {
        /// The loader's HTTP address.
        #[arg(long, env = "FUNNEL_LOADER_URL", default_value = "http://127.0.0.1:9464")]
        url: String,
    },
    /// Check the broker, schema registry, source database and lake; fails when one is down.
    Health,
    /// funnel's HTTP front: GET / (the customer 360 page, from Redis), POST /topics/{topic} (JSON in,
    /// Avro out, like a REST proxy: key and value resolved against the topic's latest registered
    /// schemas; public input topics only; all records of a request in one transaction) and
    /// GET /api/sql?q=SELECT… (read-only SQL over the lake, bounded in rows and time).
    ///
    /// Every route but /health needs the API token: FUNNEL_API_TOKEN, or a file named by
    /// FUNNEL_API_TOKEN_FILE, or the one `funnel stack up` writes to .funnel/api-token.
    /// Send it as a bearer token, or as HTTP Basic password for the user funnel (browsers ask):
    ///
    ///   curl -XPOST localhost:5000/topics/dom.customer.profile.upsert.v1 \
    ///     -H "authorization: Bearer $(cat .funnel/api-token)" -H 'content-type: application/json' \
    ///     -d '{"records":[{"key":{"customer_id":"c1"},"value":{"customer_id":"c1","city":"sao paulo","source":"http"}}]}'
    #[command(verbatim_doc_comment)]
    Serve {
        #[command(flatten)]
        cfg: funnel::serve::ServeConfig,
    },
    /// Email campaigns: `funnel campaigns serve` (API, tracking, planner), `send` (sender
    /// workers), `submit` and `status` (`funnel campaigns serve --help`).
    #[command(alias = "campaign")]
    Campaigns {
        #[command(subcommand)]
        action: funnel::campaigns::cli::CampaignsAction,
    },
    /// The sGTM / ad-platform events relay (`funnel relay serve --help`).
    Relay {
        #[command(subcommand)]
        action: funnel::relay::cli::RelayAction,
    },
    /// Train a model on the lake: `funnel train propensity --model leads|customers`.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Query the lake with SQL (read-only; DataFusion dialect). Every Delta table under
    /// bronze/, silver/ and gold/ is a table named <layer>_<table> with dots as underscores:
    ///
    ///   funnel sql "SELECT advertising_channel, count(*) FROM gold_m_dim_lead GROUP BY 1 ORDER BY 2 DESC"
    ///   funnel sql --format csv "SELECT * FROM silver_m_data_closed_deal LIMIT 5"
    ///   funnel sql "SHOW TABLES"
    #[command(verbatim_doc_comment)]
    Sql {
        query: String,
        #[arg(long, value_parser = ["table", "json", "csv"], default_value = "table")]
        format: String,
    },
    /// Rebuild a processor's state from its input topics (stop the processor first):
    /// deletes its changelogs (leads: also its output topic and gold table; c360: its output
    /// topics and the silver/gold c360 tables, then rebuilds them and the Redis view), rewinds
    /// its consumer group, runs it to the end of its inputs and exits. Prints the digests of
    /// the rebuilt outputs (`funnel digest`): run `funnel digest <processor>` before the
    /// replay to compare with the live run.
    Replay {
        #[arg(value_parser = ["seller-metrics", "leads", "c360", "propensity"])]
        processor: String,
        /// Prefix of the CDC topics it reads.
        #[arg(long = "cdc-topic-prefix", default_value = "olist")]
        cdc_topic_prefix: String,
        #[arg(long = "loop-delivery", value_enum, default_value = "exactly-once")]
        loop_delivery: funnel::kafka::batch_producer::Delivery,
        #[command(flatten)]
        leads: funnel::leads::LeadsConfig,
        #[command(flatten)]
        c360: funnel::c360::C360Config,
        #[command(flatten)]
        propensity: funnel::propensity::run::PropensityConfig,
        #[command(flatten)]
        ns: funnel::topology::names::NamespaceArg,
    },
    /// Digest the output topics of a stateful processor (c360, leads, seller-metrics): the
    /// enriched orders as every record per order, tables as their latest record per key,
    /// leaving out fields that say when a record was made (epoch, stream_time, processed_at).
    /// Equal digests before and after `funnel replay` mean the replay reproduced the live run.
    Digest {
        #[arg(value_parser = ["seller-metrics", "leads", "c360"])]
        processor: String,
        /// Prefix of the CDC topics it reads.
        #[arg(long = "cdc-topic-prefix", default_value = "olist")]
        cdc_topic_prefix: String,
        #[command(flatten)]
        ns: funnel::topology::names::NamespaceArg,
    },
    /// CDC maintenance.
    Cdc {
        #[command(subcommand)]
        action: CdcAction,
    },
    /// Derive the Avro schemas of the source tables into schemas/cdc/ (commit the result).
    Schemas {
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        #[arg(long, default_value = "olist")]
        topic_prefix: String,
        #[arg(long, value_delimiter = ',', default_value = "ecommerce,marketing")]
        schemas: Vec<String>,
    },
    /// Benchmarks: throughput as a ratio against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
    /// Source rows, change events per topic and rows per bronze table.
    Summary {
        #[arg(long, default_value = "olist")]
        topic_prefix: String,
    },
    /// The whole topology end to end on the local stack: stack up, seed, topics, processors
    /// (in the background), then a summary. Stop everything with `funnel stack down`.
    Demo {
        /// Olist CSV folder (default: ../shared/data/olist when present, else synthetic data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Use synthetic data even when the Olist files are present.
        #[arg(long)]
        synthetic: bool,
        /// Thousands of synthetic orders.
        #[arg(long, default_value_t = 10)]
        synthetic_scale: u32,
        #[arg(long, default_value = ".")]
        topology_dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum TrainWhat {
    /// A propensity model from the lake's features as of a cutoff: fitted on the period
    /// before it, evaluated (ROC AUC, PR AUC, log loss, calibration) against a baseline on the
    /// period after it, saved as the current version under <lake>/models/propensity/<model>/
    /// and appended to gold_propensity_metrics / gold_propensity_calibration:
    ///
    ///   funnel train propensity --model leads
    ///   funnel train propensity --model customers --cutoff 2018-03-01 --horizon-days 120
    ///   funnel sql "SELECT model, version, scorer, roc_auc, pr_auc FROM gold_propensity_metrics"
    #[command(verbatim_doc_comment)]
    Propensity {
        #[command(flatten)]
        args: funnel::propensity::train::TrainArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum StackAction {
    /// Install what is missing and start every service (idempotent).
    Up,
    /// Stop every service (state is kept).
    Down,
    /// Show each service's endpoint and state.
    Status,
    /// Print `export FUNNEL_…=…` lines: eval "$(funnel stack env)".
    Env,
}

#[derive(Subcommand)]
pub(crate) enum TopicsAction {
    /// Create the declared topics and register their key/value schemas.
    Create {
        #[arg(long, default_value = ".")]
        topology_dir: PathBuf,
    },
    /// List topics on the broker.
    List,
}

#[derive(Subcommand)]
pub(crate) enum SeedWhat {
    /// Synthetic customer profiles and orders straight to dom.customer.profile.upsert.v1 and
    /// dom.order.created.v1 (Avro through the registry), e.g. --customers 1000 --orders 5000 --rate 200.
    Events {
        #[command(flatten)]
        cfg: funnel::domain::seed::SeedEventsConfig,
        #[command(flatten)]
        ns: funnel::topology::names::NamespaceArg,
    },
    /// Create and load the olist database (drops existing olist tables).
    Olist {
        /// Folder with the Olist CSVs (gzip); missing tables are generated to match them.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Without --dir: thousands of synthetic orders.
        #[arg(long, default_value_t = 10)]
        synthetic_scale: u32,
    },
}

#[derive(Subcommand)]
pub(crate) enum BenchWhich {
    /// CDC snapshot rows/s ÷ `COPY (SELECT …) TO STDOUT` rows/s on the same table.
    CdcSnapshot {
        #[arg(long, default_value = "ecommerce.order_payments")]
        table: String,
    },
    /// Bronze writer records/s ÷ a no-op consumer's records/s on the same topics (run `funnel demo` first).
    Bronze {
        #[arg(long, default_value = r"^olist\..+")]
        topics: String,
    },
    /// c360 engine records/s ÷ a no-op consume→produce passthrough's on the same synthetic
    /// domain events, then p50/p99 latency from source commit to Redis at a steady rate.
    C360 {
        #[command(flatten)]
        cfg: funnel::bench::c360::C360BenchConfig,
    },
    /// Relay ingest (POST /v1/events ÷ a raw Avro produce of the same events) and delivery
    /// (the delivery workers ÷ a plain HTTP client on the same requests to a sink that answers
    /// at once). Uses a scratch database funnel_bench_relay and scratch topics.
    Relay {
        #[command(flatten)]
        cfg: funnel::bench::relay::RelayBenchConfig,
    },
    /// Campaign mails/s: funnel's sender workers (broker, ledger, rendering with tracking
    /// links, pooled SMTP) ÷ a plain SMTP client sending the same rendered mails, both to an
    /// in-process SMTP sink. Scratch topics, deleted afterwards.
    Campaigns {
        #[command(flatten)]
        cfg: funnel::bench::campaigns::CampaignsBenchConfig,
    },
    /// seller-metrics records/s as 1, 2, 3 instances of its consumer groups (separate
    /// processes with their own --instance-id, bounded runs over the same CDC topics; run
    /// `funnel demo` first), each ÷ one instance.
    ScaleOut {
        /// Prefix of the CDC topics to read.
        #[arg(long = "cdc-topic-prefix", default_value = "olist")]
        cdc_topic_prefix: String,
        /// Instance counts to run, in order.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        instances: Vec<usize>,
    },
}

#[derive(Subcommand)]
pub(crate) enum CdcAction {
    /// Show the connector's committed progress (phase, slot, snapshot cursor, last commit LSN).
    Status {
        #[arg(long, default_value = "olist")]
        name: String,
    },
    /// Drop the connector's slots and progress: the next run snapshots again.
    Reset {
        #[arg(long, default_value = "olist")]
        name: String,
    },
}

/// The arguments of `funnel run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Processors: cdc, bronze, loader (silver staging, load events and the data-loader
    /// API on --http-port), seller-metrics (its repartition step by seller and the aggregate),
    /// leads (its repartition step by lead and the join MQLs ⟕ deals ⟕ seller metrics →
    /// marketing.lead.v1; both seller-metrics and leads run as N instances with distinct
    /// --instance-id), leads-gold (marketing.lead.v1 → gold m_dim.lead), domain (olist CDC →
    /// dom.customer.profile.upsert.v1, dom.order.created/updated.v1), c360 (the SQL of
    /// sql/c360/ → enriched orders, consolidated customers, segments), lake (silver
    /// c360.customer / c360.order, gold c360), cache (consolidated customers → Redis), relay
    /// (CDC of the relay tables and the intake of OMS events into relay.event.received.v1),
    /// propensity (scores dom.customer.consolidated.v1 and marketing.lead.v1 with the current
    /// models of `funnel train propensity`, and their gold tables), passthrough (copies
    /// --passthrough-from to --passthrough-to; the benchmark baseline).
    #[arg(required = true, value_parser = ["cdc", "bronze", "loader", "seller-metrics", "leads", "leads-gold", "domain", "c360", "lake", "cache", "relay", "propensity", "passthrough"])]
    pub(crate) processors: Vec<String>,
    /// passthrough: topic to read (through the consumer group funnel-passthrough-<to>).
    #[arg(long, requires = "passthrough_to")]
    pub(crate) passthrough_from: Option<String>,
    /// passthrough: topic to write, key and value bytes unchanged.
    #[arg(long)]
    pub(crate) passthrough_to: Option<String>,
    /// The lake sinks (bronze, leads-gold, lake) and seller-metrics stop once they have
    /// processed everything their topics held when they started, and the command exits
    /// (one-shot loads, a copy of the lake elsewhere, benchmarks, tests). Other processors
    /// ignore it.
    #[arg(long = "until-caught-up")]
    pub(crate) until_caught_up: bool,
    /// This process's name among several instances of the same processors (a stable,
    /// unique id per instance, e.g. the pod name). Processors that can share their
    /// consumer group — seller-metrics and leads (state partitioned like their inputs), propensity,
    /// the relay's intake and router (stateless) — then use the transactional id
    /// `<group>-<instance>`: instances do not fence each other, and a restarted instance
    /// fences only its own previous run. c360 and domain hold their whole state in
    /// one instance and ignore it (with a warning). Unset: one instance.
    #[arg(long = "instance-id", env = "FUNNEL_INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,
    /// Delivery of topic→topic processors (passthrough).
    #[arg(long = "loop-delivery", value_enum, default_value = "exactly-once")]
    pub(crate) loop_delivery: funnel::kafka::batch_producer::Delivery,
    /// Port for /metrics and /health (0 = off).
    #[arg(long, env = "FUNNEL_HTTP_PORT", default_value_t = funnel::config::DEFAULT_HTTP_PORT)]
    pub(crate) http_port: u16,
    /// Exit when a processor fails instead of restarting it in this process after a
    /// backoff (1 s doubling to 60 s, /health reporting it failed meanwhile). For
    /// deployments whose supervisor restarts the process.
    #[arg(long, env = "FUNNEL_EXIT_ON_FAILURE")]
    pub(crate) exit_on_failure: bool,
    #[command(flatten)]
    pub(crate) cdc: funnel::cdc::CdcConfig,
    #[command(flatten)]
    pub(crate) bronze: funnel::bronze::BronzeConfig,
    #[command(flatten)]
    pub(crate) leads: funnel::leads::LeadsConfig,
    #[command(flatten)]
    pub(crate) loader: funnel::loader::LoaderConfig,
    #[command(flatten)]
    pub(crate) c360: funnel::c360::C360Config,
    #[command(flatten)]
    pub(crate) relay: funnel::relay::topics::RelayConfig,
    #[command(flatten)]
    pub(crate) propensity: funnel::propensity::run::PropensityConfig,
    #[command(flatten)]
    pub(crate) ns: funnel::topology::names::NamespaceArg,
}

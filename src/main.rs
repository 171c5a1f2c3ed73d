//! The `funnel` command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use funnel::config::Endpoints;
use funnel::runtime::supervise::supervise;
use funnel::runtime::{http, shutdown};
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
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    dirs: StackDirs,
    /// Log filter (tracing EnvFilter syntax), e.g. info,funnel=debug.
    #[arg(long, env = "FUNNEL_LOG", default_value = "warn,funnel=info,deltalake_core::operations::merge=error", global = true)]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Run {
        /// Processors: cdc, bronze, loader (silver staging, load events and the data-loader
        /// API on --http-port), seller-metrics, leads (MQLs ⟕ deals ⟕ seller metrics →
        /// marketing.lead.v1), leads-gold (marketing.lead.v1 → gold m_dim.lead), domain (olist CDC →
        /// dom.customer.profile.upsert.v1, dom.order.created/updated.v1), c360 (the SQL of
        /// sql/c360/ → enriched orders, consolidated customers, segments), lake (silver
        /// c360.customer / c360.order, gold c360), cache (consolidated customers → Redis), relay
        /// (CDC of the relay tables and the intake of OMS events into relay.event.received.v1),
        /// propensity (scores dom.customer.consolidated.v1 and marketing.lead.v1 with the current
        /// models of `funnel train propensity`, and their gold tables), passthrough (copies
        /// --passthrough-from to --passthrough-to; the benchmark baseline).
        #[arg(required = true, value_parser = ["cdc", "bronze", "loader", "seller-metrics", "leads", "leads-gold", "domain", "c360", "lake", "cache", "relay", "propensity", "passthrough"])]
        processors: Vec<String>,
        /// passthrough: topic to read (through the consumer group funnel-passthrough-<to>).
        #[arg(long, requires = "passthrough_to")]
        passthrough_from: Option<String>,
        /// passthrough: topic to write, key and value bytes unchanged.
        #[arg(long)]
        passthrough_to: Option<String>,
        /// The lake sinks (bronze, leads-gold, lake) stop once they have written everything
        /// their topics held when they started, and the command exits (one-shot loads, a copy
        /// of the lake elsewhere, benchmarks, tests). Other processors ignore it.
        #[arg(long = "until-caught-up")]
        until_caught_up: bool,
        /// Delivery of topic→topic processors (passthrough).
        #[arg(long = "loop-delivery", value_enum, default_value = "exactly-once")]
        loop_delivery: funnel::kafka::batch_producer::Delivery,
        /// Port for /metrics and /health (0 = off).
        #[arg(long, env = "FUNNEL_HTTP_PORT", default_value_t = funnel::config::DEFAULT_HTTP_PORT)]
        http_port: u16,
        /// Exit when a processor fails instead of restarting it in this process after a
        /// backoff (1 s doubling to 60 s, /health reporting it failed meanwhile). For
        /// deployments whose supervisor restarts the process.
        #[arg(long, env = "FUNNEL_EXIT_ON_FAILURE")]
        exit_on_failure: bool,
        #[command(flatten)]
        cdc: funnel::cdc::CdcConfig,
        #[command(flatten)]
        bronze: funnel::bronze::BronzeConfig,
        #[command(flatten)]
        leads: funnel::leads::LeadsConfig,
        #[command(flatten)]
        loader: funnel::loader::LoaderConfig,
        #[command(flatten)]
        c360: funnel::c360::C360Config,
        #[command(flatten)]
        relay: funnel::relay::topics::RelayConfig,
        #[command(flatten)]
        propensity: funnel::propensity::run::PropensityConfig,
        #[command(flatten)]
        ns: funnel::topology::names::NamespaceArg,
    },
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
enum TrainWhat {
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
enum StackAction {
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
enum TopicsAction {
    /// Create the declared topics and register their key/value schemas.
    Create {
        #[arg(long, default_value = ".")]
        topology_dir: PathBuf,
    },
    /// List topics on the broker.
    List,
}

#[derive(Subcommand)]
enum SeedWhat {
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
enum BenchWhich {
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
}

#[derive(Subcommand)]
enum CdcAction {
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

fn init_logging(filter: &str, json: bool) {
    let env = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(env).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    // s3:// lakes (deltalake registers them at load time too; explicit, so no linker drops it).
    deltalake::aws::register_handlers(None);
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ep = cli.endpoints;
    match cli.command {
        Command::Stack { action } => match action {
            StackAction::Up => funnel::stack::up(&cli.dirs).await,
            StackAction::Down => funnel::stack::down(&cli.dirs).await,
            StackAction::Status => funnel::stack::status(&cli.dirs).await,
            StackAction::Env => {
                print!("{}", funnel::stack::env_lines(&ep.lake()?, &cli.dirs.state()?));
                Ok(())
            }
        },
        Command::Registry { port, topic } => {
            shutdown::install();
            funnel::registry::server::serve(&ep.brokers, port, &topic).await
        }
        Command::Topology { mermaid, topology_dir } => {
            let t = funnel::topology::Topology::load(&topology_dir)?;
            if !mermaid {
                t.print();
            }
            println!("{}", t.mermaid());
            Ok(())
        }
        Command::Topics { action } => match action {
            TopicsAction::Create { topology_dir } => {
                let t = funnel::topology::Topology::load(&topology_dir)?;
                let registry = funnel::registry::RegistryClient::new(&ep.registry_url);
                let report = t.create(&ep.brokers, &registry).await?;
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["subject / topic", "result"]);
                for (a, b) in report {
                    table.add_row(vec![a, b]);
                }
                println!("{table}");
                Ok(())
            }
            TopicsAction::List => {
                for t in funnel::kafka::admin::list_topics(&ep.brokers)? {
                    println!("{t}");
                }
                Ok(())
            }
        },
        Command::Seed { what: SeedWhat::Events { cfg, ns } } => {
            let topics = funnel::domain::DomainTopics::new(funnel::topology::names::TopicNames::new("olist", &ns.namespace));
            let r = funnel::domain::seed::run(&ep.brokers, &ep.registry_url, &topics, &cfg).await?;
            println!("produced {} profiles to {} and {} orders to {} in {:.1} s", r.profiles, topics.profile, r.orders, topics.order_created, r.seconds);
            Ok(())
        }
        Command::Seed { what: SeedWhat::Olist { dir, synthetic_scale } } => {
            let report = funnel::olist::seed::seed(&ep.source_pg_url, &funnel::olist::seed::SeedOptions { dir, synthetic_scale }).await?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["table", "rows", "from"]);
            for (t, n, from) in report.tables {
                table.add_row(vec![t, n.to_string(), from.to_string()]);
            }
            println!("{table}");
            Ok(())
        }
        Command::Run { processors, http_port, exit_on_failure, until_caught_up, cdc, mut bronze, leads, loader, c360, relay, propensity, ns, passthrough_from, passthrough_to, loop_delivery } => {
            let c360_topics = funnel::c360::C360Topics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
            let topics = funnel::leads::names::LeadTopics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
            shutdown::install();
            let mut tasks = tokio::task::JoinSet::new();
            if processors.iter().any(|p| p == "loader") {
                let l = funnel::loader::Loader::new(&ep, &ep.lake()?, topics.clone(), cdc.clone(), loader.clone()).await?;
                let creds = funnel::runtime::auth::ApiCredentials::load(&cli.dirs.state()?)?;
                http::spawn(&ep.bind_address, http_port, Some(funnel::loader::service::router(l.clone(), creds))).await?;
                tasks.spawn(async move { supervise("loader", exit_on_failure, || l.clone().run()).await.context("loader") });
            } else {
                http::spawn(&ep.bind_address, http_port, None).await?;
            }
            for p in processors {
                let ep = ep.clone();
                // Each processor runs supervised: a failure (a dependency went away) restarts it
                // after a backoff instead of ending the process (runtime::supervise).
                let exit = exit_on_failure;
                match p.as_str() {
                    "cdc" => {
                        let cfg = cdc.clone();
                        tasks.spawn(async move {
                            supervise("cdc", exit, || funnel::cdc::run(&ep.source_pg_url, &ep.brokers, &ep.registry_url, cfg.clone())).await.map(|_| ()).context("cdc")
                        });
                    }
                    "bronze" => {
                        bronze.until_caught_up = until_caught_up;
                        let cfg = bronze.clone();
                        // A bounded run (--until-caught-up) is a one-shot command: it fails, not retries.
                        let exit = exit || until_caught_up;
                        tasks.spawn(async move {
                            let lake = ep.lake()?;
                            supervise(funnel::bronze::PROCESSOR, exit, || async { funnel::bronze::run(&ep.brokers, &ep.registry_url, &lake, cfg.clone()).await.map(|_| ()) }).await.context("bronze")
                        });
                    }
                    "loader" => {}
                    "seller-metrics" => {
                        let (topics, cfg) = (topics.clone(), leads.clone());
                        tasks.spawn(async move {
                            supervise("seller-metrics", exit, || funnel::leads::run_seller_metrics(&ep.brokers, &ep.registry_url, topics.clone(), loop_delivery, &cfg, false)).await
                        });
                    }
                    "leads" => {
                        let (topics, cfg) = (topics.clone(), leads.clone());
                        tasks.spawn(async move {
                            supervise("leads", exit, || funnel::leads::run_leads(&ep.brokers, &ep.registry_url, topics.clone(), loop_delivery, &cfg, false)).await
                        });
                    }
                    "leads-gold" => {
                        let (topics, cfg, exit) = (topics.clone(), leads.clone(), exit || until_caught_up);
                        tasks.spawn(async move {
                            let lake = ep.lake()?;
                            supervise(funnel::leads::GOLD_PROCESSOR, exit, || funnel::leads::run_leads_gold(&ep.brokers, &ep.registry_url, &lake, topics.clone(), &cfg, until_caught_up)).await
                        });
                    }
                    "propensity" => {
                        let topics = funnel::propensity::run::ScoreTopics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
                        for kind in [funnel::propensity::features::ModelKind::Customers, funnel::propensity::features::ModelKind::Leads] {
                            let (ep, topics, cfg) = (ep.clone(), topics.clone(), propensity.clone());
                            tasks.spawn(async move {
                                let models = ep.models_dir()?;
                                let name = funnel::propensity::scorer::processor(kind);
                                supervise(&name, exit, || funnel::propensity::run::score(kind, &ep.brokers, &ep.registry_url, &models, &topics, loop_delivery, &cfg, false)).await
                            });
                        }
                        let (topics, cfg) = (topics.clone(), propensity.clone());
                        tasks.spawn(async move {
                            let lake = ep.lake()?;
                            supervise(funnel::propensity::run::GOLD_PROCESSOR, exit, || funnel::propensity::run::gold(&ep.brokers, &ep.registry_url, &lake, &topics, &cfg, false)).await
                        });
                    }
                    "domain" => {
                        let topics = funnel::domain::DomainTopics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
                        tasks.spawn(async move { supervise("domain", exit, || funnel::domain::run(&ep.brokers, &ep.registry_url, topics.clone(), loop_delivery)).await });
                    }
                    "c360" => {
                        let (topics, cfg) = (c360_topics.clone(), c360.clone());
                        tasks.spawn(async move { supervise(funnel::c360::PROCESSOR, exit, || funnel::c360::run(&ep.brokers, &ep.registry_url, topics.clone(), loop_delivery, &cfg, false)).await });
                    }
                    "lake" => {
                        let (topics, cfg, exit) = (c360_topics.clone(), c360.clone(), exit || until_caught_up);
                        tasks.spawn(async move {
                            let lake = ep.lake()?;
                            supervise(funnel::c360::LAKE_PROCESSOR, exit, || funnel::c360::run_lake(&ep.brokers, &ep.registry_url, &lake, topics.clone(), &cfg, until_caught_up)).await
                        });
                    }
                    "cache" => {
                        let (topics, cfg) = (c360_topics.clone(), c360.clone());
                        tasks.spawn(async move {
                            supervise(funnel::c360::CACHE_PROCESSOR, exit, || funnel::c360::cache::run(&ep.brokers, &ep.registry_url, &ep.redis_url, topics.clone(), &cfg.redis_prefix, false)).await
                        });
                    }
                    "relay" => {
                        let (cdc_cfg, topics) = (funnel::relay::run::cdc_config(&relay, cdc.delivery), funnel::relay::topics::RelayTopics::new(&relay, &ns.namespace));
                        let ep2 = ep.clone();
                        tasks.spawn(async move {
                            supervise("relay-cdc", exit, || funnel::relay::run::run_cdc(&ep2.source_pg_url, &ep2.brokers, &ep2.registry_url, cdc_cfg.clone())).await.context("relay-cdc")
                        });
                        let (ep3, t3) = (ep.clone(), topics.clone());
                        tasks.spawn(async move {
                            supervise(funnel::relay::intake::PROCESSOR, exit, || funnel::relay::run::run_intake(&ep3.brokers, &ep3.registry_url, t3.clone(), loop_delivery)).await
                        });
                        let (ep4, t4) = (ep.clone(), topics.clone());
                        tasks.spawn(async move {
                            supervise(funnel::relay::route::PROCESSOR, exit, || funnel::relay::run::run_route(&ep4.brokers, &ep4.registry_url, t4.clone(), loop_delivery)).await
                        });
                        let (stack_dir, cfg) = (cli.dirs.state()?, relay.clone());
                        tasks.spawn(async move {
                            supervise(funnel::relay::deliver::PROCESSOR, exit, || {
                                funnel::relay::run::run_deliver(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &stack_dir, cfg.clone(), topics.clone())
                            })
                            .await
                        });
                    }
                    "passthrough" => {
                        let (Some(from), Some(to)) = (passthrough_from.clone(), passthrough_to.clone()) else {
                            anyhow::bail!("passthrough needs --passthrough-from TOPIC --passthrough-to TOPIC");
                        };
                        let cfg = funnel::runtime::processor::LoopConfig::new(&format!("passthrough-{to}"), &ep.brokers, vec![from], loop_delivery);
                        tasks.spawn(async move {
                            supervise(&cfg.processor.clone(), exit, || funnel::runtime::processor::run(cfg.clone(), funnel::runtime::processor::Passthrough { to: to.clone() })).await.context("passthrough")
                        });
                    }
                    other => anyhow::bail!("unknown processor {other}"),
                }
            }
            // A processor ends only on shutdown (or, with --exit-on-failure, on its first failure):
            // then the process stops (a supervisor restarts it; progress is durable).
            while let Some(res) = tasks.join_next().await {
                if let Err(e) = res? {
                    shutdown::request();
                    return Err(e);
                }
            }
            Ok(())
        }
        Command::Load { url } => {
            let creds = funnel::runtime::auth::ApiCredentials::load(&cli.dirs.state()?)?;
            let resp = reqwest::Client::new()
                .post(format!("{}/load", url.trim_end_matches('/')))
                .header("authorization", creds.authorization())
                .timeout(std::time::Duration::from_secs(900))
                .send()
                .await
                .with_context(|| format!("no loader at {url} (start one with `funnel run loader`)"))?;
            let code = resp.status();
            let event: serde_json::Value = resp.json().await.context("the loader's answer is not JSON")?;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["table", "status", "records", "ms", "source", "topic", "staged", "error"]);
            let num = |v: &serde_json::Value| v.as_i64().map(|n| n.to_string()).unwrap_or("-".into());
            for t in event["tables"].as_array().cloned().unwrap_or_default() {
                let i = &t["integrity"];
                table.add_row(vec![
                    t["table"].as_str().unwrap_or("?").to_string(),
                    t["status"].as_str().unwrap_or("?").to_string(),
                    num(&t["records_loaded"]),
                    num(&t["duration_ms"]),
                    num(&i["source_rows"]),
                    num(&i["topic_rows"]),
                    num(&i["staged_rows"]),
                    t["error"].as_str().unwrap_or("").to_string(),
                ]);
            }
            println!("{} {}\n{table}", event["event_type"].as_str().unwrap_or("load"), event["load_id"].as_str().unwrap_or(""));
            if !code.is_success() {
                anyhow::bail!("load failed ({code}): {}", event["error"].as_str().unwrap_or("see the table above"));
            }
            Ok(())
        }
        Command::Train { what: TrainWhat::Propensity { args } } => funnel::propensity::cli::run_train(&ep.lake()?, &ep.models_dir()?, &args).await,
        Command::Sql { query, format } => {
            let ctx = funnel::lake::query::context(&ep.lake()?).await?;
            let batches = funnel::lake::query::batches(&ctx, &query).await?;
            match format.as_str() {
                "json" => {
                    for row in funnel::lake::query::to_json(&batches)? {
                        println!("{}", serde_json::Value::Object(row));
                    }
                }
                "csv" => print!("{}", funnel::lake::query::to_csv(&batches)?),
                _ => {
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    println!("{}\n({rows} rows)", funnel::lake::query::to_table(&batches)?);
                }
            }
            Ok(())
        }
        Command::Serve { cfg } => {
            shutdown::install();
            funnel::serve::run(&ep, &cli.dirs.state()?, &cfg).await
        }
        Command::Campaigns { action } => {
            shutdown::install();
            funnel::campaigns::cli::run(action, &ep, &cli.dirs.state()?).await
        }
        Command::Relay { action } => {
            shutdown::install();
            funnel::relay::cli::run(action, &ep, &cli.dirs.state()?).await
        }
        Command::Health => {
            let checks = funnel::loader::health::check_all(&ep, &ep.lake()?).await;
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["dependency", "state", "detail"]);
            for c in &checks {
                table.add_row(vec![c.dependency.clone(), if c.ok { "ok" } else { "FAILING" }.to_string(), c.detail.clone()]);
            }
            println!("{table}");
            let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.dependency.as_str()).collect();
            if !failing.is_empty() {
                anyhow::bail!("failing: {}", failing.join(", "));
            }
            Ok(())
        }
        Command::Replay { processor, cdc_topic_prefix, loop_delivery, leads, c360, propensity, ns } => {
            shutdown::install();
            let names = funnel::topology::names::TopicNames::new(&cdc_topic_prefix, &ns.namespace);
            let lake = ep.lake()?;
            if processor == "propensity" {
                let topics = funnel::propensity::run::ScoreTopics::new(names);
                funnel::propensity::run::replay(&ep.brokers, &ep.registry_url, &lake, &ep.models_dir()?, topics, loop_delivery, &propensity).await?;
                println!("propensity: every customer and lead scored again with the current models; start `funnel run propensity` again");
                return Ok(());
            }
            if processor == "c360" {
                let topics = funnel::c360::C360Topics::new(names.clone());
                funnel::c360::replay::replay(&ep.brokers, &ep.registry_url, &ep.redis_url, &lake, topics, loop_delivery, &c360).await?;
                println!("c360: topics, lake tables and the Redis view rebuilt; start `funnel run c360 lake cache` again");
            } else {
                let topics = funnel::leads::names::LeadTopics::new(names.clone());
                funnel::leads::replay::replay(&processor, &ep.brokers, &ep.registry_url, &lake, topics, loop_delivery, &leads).await?;
                println!("{processor}: rebuilt from its input topics; start it again with `funnel run {processor}`");
            }
            funnel::topology::digest::print(&ep.brokers, &ep.registry_url, &processor, &names).await?;
            Ok(())
        }
        Command::Digest { processor, cdc_topic_prefix, ns } => {
            let names = funnel::topology::names::TopicNames::new(&cdc_topic_prefix, &ns.namespace);
            funnel::topology::digest::print(&ep.brokers, &ep.registry_url, &processor, &names).await?;
            Ok(())
        }
        Command::Cdc { action: CdcAction::Status { name } } => {
            match funnel::cdc::load_state(&ep.brokers, &ep.registry_url, &name).await? {
                None => println!("connector {name}: no committed progress (next start snapshots)"),
                Some(s) => {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["connector", "phase", "slot", "tables done", "snapshot cursor", "last commit LSN"]);
                    table.add_row(vec![
                        s.name.clone(),
                        format!("{:?}", s.phase).to_lowercase(),
                        s.slot.clone(),
                        format!("{}/{}", s.tables_done.len(), s.tables.len()),
                        match (&s.current_table, &s.last_pk) {
                            (Some(t), Some(pk)) => format!("{t} after {}", pk.join(",")),
                            _ => "-".into(),
                        },
                        funnel::cdc::pgoutput::format_lsn(s.last_commit_lsn),
                    ]);
                    println!("{table}");
                }
            }
            Ok(())
        }
        Command::Cdc { action: CdcAction::Reset { name } } => funnel::cdc::reset(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &name).await,
        Command::Schemas { out, topic_prefix, schemas } => {
            let client = funnel::olist::db::connect(&ep.source_pg_url).await?;
            let tables = funnel::cdc::catalog::tables_in(&client, &schemas).await?;
            let dir = out.join("cdc");
            std::fs::create_dir_all(&dir)?;
            for t in tables {
                let topic = t.topic(&topic_prefix);
                for (suffix, json) in [("key", t.key_schema(&topic_prefix)), ("value", t.value_schema(&topic_prefix))] {
                    let path = dir.join(format!("{topic}-{suffix}.avsc"));
                    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
                    println!("wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Bench { which } => match which {
            BenchWhich::CdcSnapshot { table } => funnel::bench::cdc_snapshot::run(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &table).await,
            BenchWhich::Bronze { topics } => funnel::bench::bronze::run(&ep.brokers, &ep.registry_url, &topics).await,
            BenchWhich::Relay { cfg } => funnel::bench::relay::run(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &cfg).await,
            BenchWhich::Campaigns { cfg } => funnel::bench::campaigns::run(&ep.brokers, &ep.registry_url, &cfg).await,
            BenchWhich::C360 { cfg } => {
                shutdown::install();
                funnel::bench::c360::run(&ep.brokers, &ep.registry_url, &ep.redis_url, &cfg).await
            }
        },
        Command::Summary { topic_prefix } => funnel::summary::print(&ep, &topic_prefix).await,
        Command::Demo { data_dir, synthetic, synthetic_scale, topology_dir } => {
            let dir = if synthetic { None } else { data_dir.or_else(|| Some(PathBuf::from("../shared/data/olist")).filter(|d| d.is_dir())) };
            funnel::demo::run(&ep, &cli.dirs, &topology_dir, dir, synthetic_scale).await
        }
    }
}

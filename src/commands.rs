//! What each command does: the dispatch of `funnel <command>` (`funnel run` is in processes.rs).

use std::path::PathBuf;

use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use funnel::runtime::shutdown;

use crate::cli::*;

pub(crate) async fn run(cli: Cli) -> Result<()> {
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
        Command::Run(args) => crate::processes::run(args, ep, &cli.dirs).await,
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
            BenchWhich::ScaleOut { cdc_topic_prefix, instances } => funnel::bench::scale_out::run(&ep.brokers, &cdc_topic_prefix, &instances).await,
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

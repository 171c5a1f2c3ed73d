//! `funnel run PROCESSOR…`: the named processors, each supervised, in this process until
//! SIGTERM (or, with --exit-on-failure, the first failure).

use anyhow::{Context, Result};

use funnel::config::Endpoints;
use funnel::runtime::supervise::supervise;
use funnel::runtime::{http, shutdown};
use funnel::stack::StackDirs;

use crate::cli::RunArgs;

pub(crate) async fn run(args: RunArgs, ep: Endpoints, dirs: &StackDirs) -> Result<()> {
    let RunArgs { processors, http_port, exit_on_failure, until_caught_up, instance_id, cdc, mut bronze, leads, loader, c360, relay, propensity, ns, passthrough_from, passthrough_to, loop_delivery } = args;
    let c360_topics = funnel::c360::C360Topics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
    let topics = funnel::leads::names::LeadTopics::new(funnel::topology::names::TopicNames::new(&cdc.topic_prefix, &ns.namespace));
    shutdown::install();
    funnel::runtime::instance::set(instance_id);
    let mut tasks = tokio::task::JoinSet::new();
    if processors.iter().any(|p| p == "loader") {
        let l = funnel::loader::Loader::new(&ep, &ep.lake()?, topics.clone(), cdc.clone(), loader.clone()).await?;
        let creds = funnel::runtime::auth::ApiCredentials::load(&dirs.state()?)?;
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
                let (topics, cfg, exit) = (topics.clone(), leads.clone(), exit || until_caught_up);
                tasks.spawn(async move {
                    supervise("seller-metrics", exit, || funnel::leads::run_seller_metrics(&ep.brokers, &ep.registry_url, topics.clone(), loop_delivery, &cfg, until_caught_up)).await
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
                let (stack_dir, cfg) = (dirs.state()?, relay.clone());
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

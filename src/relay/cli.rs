//! `funnel relay …`: the relay's commands.

use anyhow::{Context, Result};

use super::crypto::Keyring;
use super::service::RelayServeConfig;
use crate::config::Endpoints;

#[derive(clap::Subcommand, Debug)]
pub enum RelayAction {
    /// The relay's HTTP service: POST /v1/events (OMS batches), /admin/v1/* (storefronts,
    /// sgtm-configs, platforms, credentials), /health, /health/ready and /metrics. Applies the
    /// relay schema's migrations (sql/relay/migrations/) to the source database first.
    ///
    /// Credentials: HTTP Basic with user funnel and the API token as password (or a bearer
    /// token); the token comes from FUNNEL_API_TOKEN, FUNNEL_API_TOKEN_FILE or .funnel/api-token.
    /// Secrets are stored encrypted with the Fernet key(s) of ENCRYPTION_KEY or
    /// ENCRYPTION_KEY_FILE (.funnel/relay-encryption-key on the local stack).
    ///
    ///   curl -u funnel:$(cat .funnel/api-token) -H 'content-type: application/json' \
    ///     -d @../shared/data/relay/oms-batch-sample.json localhost:8088/v1/events
    #[command(verbatim_doc_comment)]
    Serve {
        #[command(flatten)]
        cfg: RelayServeConfig,
    },
    /// Apply the relay schema's pending migrations and exit.
    Migrate,
    /// Send the dead-lettered deliveries (relay.delivery.dlq.v1) again, once the cause is
    /// fixed: each one not replayed before goes back to relay.delivery.requested.v1 as a new
    /// round of attempts (the running delivery workers send it). Prints the count per destination.
    ReplayDlq {
        #[command(flatten)]
        relay: super::topics::RelayConfig,
        #[command(flatten)]
        ns: crate::topology::names::NamespaceArg,
    },
    /// Key rotation: re-encrypt every stored secret under the first key of ENCRYPTION_KEY
    /// ("new,old"); afterwards the old key can be removed.
    Rekey,
}

pub async fn run(action: RelayAction, ep: &Endpoints, stack_dir: &std::path::Path) -> Result<()> {
    match action {
        RelayAction::Serve { cfg } => super::service::run(&ep.source_pg_url, &ep.bind_address, stack_dir, &cfg).await,
        RelayAction::Migrate => {
            let applied = super::db::migrate(&ep.source_pg_url).await?;
            println!("relay schema: {} migration(s) applied, {} known", applied.len(), super::db::MIGRATIONS.len());
            Ok(())
        }
        RelayAction::ReplayDlq { relay, ns } => {
            let topics = super::topics::RelayTopics::new(&relay, &ns.namespace);
            let counts = super::replay::replay_dlq(&ep.brokers, &ep.registry_url, &topics).await?;
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["destination", "replayed"]);
            for (d, n) in &counts {
                table.add_row(vec![d.clone(), n.to_string()]);
            }
            println!("{table}");
            println!("{} dead-lettered deliveries sent again to {}", counts.values().sum::<u64>(), topics.requested);
            Ok(())
        }
        RelayAction::Rekey => {
            let keys = Keyring::load(stack_dir)?;
            let n = rekey(&ep.source_pg_url, &keys).await?;
            println!("re-encrypted {n} stored secret(s) under the first key");
            Ok(())
        }
    }
}

/// Re-encrypt every secret column in one transaction: all rows move to the first key or none.
pub async fn rekey(pg_url: &str, keys: &Keyring) -> Result<u64> {
    let mut client = crate::olist::db::connect(pg_url).await?;
    let tx = client.transaction().await?;
    let mut n = 0;
    for (table, column) in [
        ("relay.storefront_sgtm_config", "api_secret_encrypted"),
        ("relay.storefront_sgtm_config", "custom_headers_encrypted"),
        ("relay.platform_credentials", "secret_encrypted"),
    ] {
        let rows = tx.query(&format!("SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL FOR UPDATE"), &[]).await?;
        for r in rows {
            let id: i32 = r.get(0);
            let token = keys.reencrypt(r.get::<_, &str>(1)).with_context(|| format!("{table} id {id}, {column}"))?;
            tx.execute(&format!("UPDATE {table} SET {column} = $2, updated_at = now() WHERE id = $1"), &[&id, &token]).await?;
            n += 1;
        }
    }
    tx.commit().await?;
    Ok(n)
}

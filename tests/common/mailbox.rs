//! A real SMTP server for the campaign tests: the stack's aiosmtpd sink (deploy/smtp-sink) on
//! a free port with its own Maildir, and the mail it received, parsed (mail-parser).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Mailbox {
    pub port: u16,
    pub dir: PathBuf,
    python: PathBuf,
    child: Child,
}

/// One received mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: HashMap<String, String>,
}

impl Mailbox {
    pub async fn start(python: &std::path::Path, dir: PathBuf) -> Mailbox {
        let port = super::free_port();
        let child = Self::spawn(python, &dir, port).await;
        Mailbox { port, dir, python: python.to_path_buf(), child }
    }

    async fn spawn(python: &std::path::Path, dir: &std::path::Path, port: u16) -> Child {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/smtp-sink/smtp_sink.py");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log")).unwrap();
        let child = Command::new(python)
            .arg(script)
            .args(["--port", &port.to_string(), "--maildir"])
            .arg(dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the SMTP sink (aiosmtpd in the tools venv: funnel stack up installs it)");
        super::wait_for(Duration::from_secs(30), "SMTP sink", || async move { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() }).await;
        child
    }

    /// kill -9 the server: connections are refused until `restart`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and Maildir.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.python, &self.dir, self.port).await;
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("new")) else { return vec![] };
        let mut out = vec![];
        for e in entries.flatten() {
            let raw = std::fs::read(e.path()).unwrap();
            let m = mail_parser::MessageParser::default().parse(&raw).expect("a parsable mail");
            let mut headers = HashMap::new();
            for h in m.headers() {
                headers.insert(h.name().to_ascii_lowercase(), m.header_raw(h.name()).unwrap_or_default().trim().to_string());
            }
            out.push(Mail {
                to: headers.get("delivered-to").cloned().unwrap_or_default().to_lowercase(),
                subject: m.subject().unwrap_or_default().to_string(),
                text: m.body_text(0).map(|t| t.to_string()).unwrap_or_default(),
                html: m.body_html(0).map(|t| t.to_string()).unwrap_or_default(),
                headers,
            });
        }
        out
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.join("new")).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

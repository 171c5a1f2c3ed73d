//! The SMTP side: building a campaign mail (stable Message-ID, RFC 8058 one-click unsubscribe
//! headers, List-Id) and sending it through a pooled lettre client, with the reply judged as
//! the relay judges HTTP answers (`Verdict`): 2xx delivered, 4xx retry (RFC 3463 transient),
//! 5xx permanent (a hard bounce). No reply at all (refused, timed out) is an outage, not a
//! verdict on the recipient.

use std::time::Duration;

use anyhow::{Context, Result};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::Digest;

use super::template::Rendered;
use crate::retry::Verdict;

/// The SMTP server's answer to one mail.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Judged { verdict: Verdict, code: Option<i32>, detail: String },
    /// No SMTP reply (connection refused, timeout, TLS): the server is down, the mail is fine.
    Unavailable(String),
}

/// A pooled SMTP client: made once per process and shared.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    pub server: String,
}

impl Smtp {
    /// `smtp://host:port` (no TLS: a relay on the local network or the stack's server).
    pub fn new(url: &str, connections: u32, timeout: Duration) -> Result<Self> {
        let u = url::Url::parse(url).with_context(|| format!("SMTP URL {url:?}"))?;
        if u.scheme() != "smtp" {
            anyhow::bail!("SMTP URL {url:?}: the scheme must be smtp://");
        }
        let host = u.host_str().context("SMTP URL without a host")?.to_string();
        let port = u.port().unwrap_or(25);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
            .port(port)
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(connections.max(1)).idle_timeout(Duration::from_secs(30)))
            .build();
        Ok(Smtp { transport, server: format!("{host}:{port}") })
    }

    pub async fn send(&self, message: &Message) -> Reply {
        match self.transport.send(message.clone()).await {
            Ok(r) => Reply::Judged { verdict: Verdict::Delivered, code: Some(code_of(r.code())), detail: r.message().collect::<Vec<_>>().join(" ") },
            Err(e) => classify(&e),
        }
    }
}

fn code_of(c: lettre::transport::smtp::response::Code) -> i32 {
    c.to_string().parse().unwrap_or_default()
}

fn classify(e: &lettre::transport::smtp::Error) -> Reply {
    let code = e.status().map(code_of);
    let detail = e.to_string();
    if e.is_transient() {
        Reply::Judged { verdict: Verdict::Retry { class: "smtp_4xx", after: None }, code, detail }
    } else if e.is_permanent() {
        Reply::Judged { verdict: Verdict::Permanent { class: "smtp_5xx" }, code, detail }
    } else {
        Reply::Unavailable(detail)
    }
}

/// The Message-ID of a campaign × recipient: the same on every attempt and every re-send, so
/// a duplicate after a crash can be recognised downstream.
pub fn message_id(campaign_id: &str, recipient_id: &str, sender: &Mailbox) -> String {
    let h = sha2::Sha256::digest(format!("{campaign_id}\0{recipient_id}").as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}.{campaign_id}@{}>", sender.email.domain())
}

pub struct MailParts<'a> {
    pub from: &'a Mailbox,
    pub to: &'a str,
    pub rendered: Rendered,
    pub message_id: String,
    pub campaign_id: &'a str,
    pub campaign_name: &'a str,
    pub recipient_id: &'a str,
    /// The one-click unsubscribe URL (absent on a test send).
    pub unsubscribe_url: Option<String>,
}

fn raw(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

pub fn build(p: MailParts<'_>) -> Result<Message, String> {
    let to: Mailbox = p.to.parse().map_err(|e| format!("recipient address {:?}: {e}", p.to))?;
    let mut b = Message::builder()
        .from(p.from.clone())
        .to(to)
        .subject(p.rendered.subject.clone())
        .message_id(Some(p.message_id))
        .raw_header(raw("List-Id", format!("{} <{}.{}>", p.campaign_name.replace(['<', '>', '\r', '\n'], ""), p.campaign_id, p.from.email.domain())))
        .raw_header(raw("X-Funnel-Campaign", p.campaign_id.to_string()))
        .raw_header(raw("X-Funnel-Recipient", p.recipient_id.to_string()))
        .raw_header(raw("Precedence", "bulk".into()));
    if let Some(u) = p.unsubscribe_url {
        // RFC 8058: the HTTPS URI, and the key/value the receiver POSTs to it.
        b = b.raw_header(raw("List-Unsubscribe", format!("<{u}>"))).raw_header(raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()));
    }
    let r = p.rendered;
    let m = match (r.text, r.html) {
        (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t, h)),
        (Some(t), None) => b.singlepart(SinglePart::plain(t)),
        (None, Some(h)) => b.singlepart(SinglePart::html(h)),
        (None, None) => return Err("a mail needs a body".into()),
    };
    m.map_err(|e| format!("building the mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_per_campaign_and_recipient() {
        let from: Mailbox = "Shop <news@shop.example>".parse().unwrap();
        assert_eq!(message_id("c1", "r1", &from), message_id("c1", "r1", &from));
        assert_ne!(message_id("c1", "r1", &from), message_id("c1", "r2", &from));
        assert!(message_id("c1", "r1", &from).ends_with(".c1@shop.example>"));
    }

    #[test]
    fn a_mail_carries_the_one_click_headers() {
        let from: Mailbox = "Shop <news@shop.example>".parse().unwrap();
        let m = build(MailParts {
            from: &from,
            to: "ana@customers.example",
            rendered: Rendered { subject: "Olá Ana".into(), html: Some("<p>Olá</p>".into()), text: Some("Olá".into()) },
            message_id: message_id("c1", "r1", &from),
            campaign_id: "c1",
            campaign_name: "Spring",
            recipient_id: "r1",
            unsubscribe_url: Some("https://t.example/u/abc".into()),
        })
        .unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        for h in ["List-Unsubscribe: <https://t.example/u/abc>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "Message-ID: <", "List-Id: Spring <c1.shop.example>"] {
            assert!(text.contains(h), "{h} missing in\n{text}");
        }
    }
}

//! Tracking links: opens (a pixel), clicks (a redirect) and the one-click unsubscribe go
//! through opaque tokens signed with HMAC-SHA-256, so a link cannot be forged or altered
//! (RFC 8058: the unsubscribe POST carries no credentials, the URI itself must be hard to
//! forge). And the judgement of whether a hit was a person or a machine.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const KEY_ENV: &str = "FUNNEL_CAMPAIGN_SIGNING_KEY";
pub const KEY_FILE_ENV: &str = "FUNNEL_CAMPAIGN_SIGNING_KEY_FILE";
pub const STACK_KEY_FILE: &str = "campaign-signing-key";
/// Bytes of the HMAC kept in a token: 128 bits.
const TAG_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Open,
    Click,
    Unsubscribe,
}

impl TokenKind {
    fn code(self) -> &'static str {
        match self {
            TokenKind::Open => "o",
            TokenKind::Click => "c",
            TokenKind::Unsubscribe => "u",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Open => "open",
            TokenKind::Click => "click",
            TokenKind::Unsubscribe => "unsubscribe",
        }
    }
}

/// What a token stands for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub k: String,
    pub c: String,
    pub r: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
}

/// The signing key and the public base URL of the tracking routes.
pub struct Links {
    key: Vec<u8>,
    pub base_url: String,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("key", &"<redacted>").field("base_url", &self.base_url).finish()
    }
}

impl Links {
    pub fn new(key: &[u8], base_url: &str) -> Result<Self> {
        if key.len() < 32 {
            bail!("the campaign signing key is too short ({} bytes; at least 32)", key.len());
        }
        Ok(Links { key: key.to_vec(), base_url: base_url.trim_end_matches('/').to_string() })
    }

    /// The key from FUNNEL_CAMPAIGN_SIGNING_KEY, the file FUNNEL_CAMPAIGN_SIGNING_KEY_FILE
    /// names, or the local stack's `.funnel/campaign-signing-key` — never from a flag.
    pub fn load(stack_dir: &Path, base_url: &str) -> Result<Self> {
        match crate::runtime::auth::read_secret(KEY_ENV, KEY_FILE_ENV, &stack_dir.join(STACK_KEY_FILE)) {
            Ok(Some((text, from))) => Links::new(text.trim().as_bytes(), base_url).map_err(|e| anyhow::anyhow!("{e} (from {from})")),
            Ok(None) => bail!("no campaign signing key: set {KEY_ENV} or {KEY_FILE_ENV}, or run `funnel stack up`"),
            Err((path, e)) => bail!("reading the campaign signing key from {}: {e}", path.display()),
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn token(&self, kind: TokenKind, campaign_id: &str, recipient_id: &str, url: Option<&str>) -> String {
        let claim = Claim { k: kind.code().into(), c: campaign_id.into(), r: recipient_id.into(), u: url.map(str::to_string) };
        let payload = B64.encode(serde_json::to_vec(&claim).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{payload}.{}", B64.encode(&tag[..TAG_BYTES]))
    }

    pub fn url(&self, kind: TokenKind, campaign_id: &str, recipient_id: &str, target: Option<&str>) -> String {
        let path = match kind {
            TokenKind::Open => "t/o",
            TokenKind::Click => "t/c",
            TokenKind::Unsubscribe => "u",
        };
        format!("{}/{path}/{}", self.base_url, self.token(kind, campaign_id, recipient_id, target))
    }

    /// The claim of a token of `kind`, if its signature holds (compared in constant time).
    pub fn verify(&self, kind: TokenKind, token: &str) -> Option<Claim> {
        let (payload, tag) = token.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        let claim: Claim = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (claim.k == kind.code()).then_some(claim)
    }
}

/// Create the local stack's signing key file when missing (random, owner-only).
pub fn ensure_stack_key(stack_dir: &Path) -> Result<PathBuf> {
    crate::runtime::auth::ensure_random_file(&stack_dir.join(STACK_KEY_FILE), 32)
}

/// User agents of link scanners, pre-fetchers and scripts rather than people.
const MACHINE_AGENTS: &[&str] = &[
    "bot", "crawler", "spider", "scanner", "preview", "prefetch", "proofpoint", "mimecast", "barracuda", "safelinks", "urldefense", "python-requests",
    "python-urllib", "curl/", "wget/", "go-http-client", "java/", "libwww", "headlesschrome", "phantomjs", "okhttp",
];

/// What is known about one hit when judging it.
pub struct Hit<'a> {
    pub kind: TokenKind,
    pub user_agent: Option<&'a str>,
    /// A `Purpose: prefetch` / `Sec-Purpose` / `X-Moz: prefetch` request header was sent.
    pub prefetch_header: bool,
    /// Milliseconds since the mail was sent (None: unknown).
    pub since_send_ms: Option<i64>,
    /// Other links of the same mail clicked within the last `BURST_MS`.
    pub other_links_in_burst: usize,
}

/// Clicks on this many other links of one mail within `BURST_MS` look like a scanner
/// following every link at once.
pub const BURST_MS: i64 = 2_000;
/// A hit sooner than this after the send: no person opens and clicks that fast.
pub const TOO_SOON_MS: i64 = 2_000;

/// Why the hit looks automated, or None for a person.
pub fn automated(h: &Hit<'_>) -> Option<&'static str> {
    let ua = h.user_agent.map(str::to_ascii_lowercase).unwrap_or_default();
    if ua.trim().is_empty() {
        return Some("no user agent");
    }
    if MACHINE_AGENTS.iter().any(|m| ua.contains(m)) {
        return Some("machine user agent");
    }
    if h.prefetch_header {
        return Some("prefetch");
    }
    if h.since_send_ms.is_some_and(|ms| ms < TOO_SOON_MS) {
        return Some("too soon after the send");
    }
    if h.kind == TokenKind::Click && h.other_links_in_burst >= 1 {
        return Some("several links at once");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_refuse_forgery_or_alteration() {
        let links = Links::new(&[7u8; 32], "https://t.example/").unwrap();
        let t = links.token(TokenKind::Click, "c1", "r1", Some("https://shop.example/a"));
        let claim = links.verify(TokenKind::Click, &t).unwrap();
        assert_eq!((claim.c.as_str(), claim.r.as_str(), claim.u.as_deref()), ("c1", "r1", Some("https://shop.example/a")));
        // the same token is not valid as another kind
        assert!(links.verify(TokenKind::Unsubscribe, &t).is_none());
        // altered payload (another recipient), altered tag, another key
        let other = links.token(TokenKind::Click, "c1", "r2", Some("https://shop.example/a"));
        let forged = format!("{}.{}", other.split_once('.').unwrap().0, t.split_once('.').unwrap().1);
        assert!(links.verify(TokenKind::Click, &forged).is_none());
        let mut bad_tag = t.clone();
        bad_tag.pop();
        bad_tag.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(links.verify(TokenKind::Click, &bad_tag).is_none());
        assert!(Links::new(&[8u8; 32], "x").unwrap().verify(TokenKind::Click, &t).is_none());
        assert!(links.verify(TokenKind::Click, "garbage").is_none());
        assert_eq!(links.url(TokenKind::Open, "c", "r", None).split("/t/o/").next(), Some("https://t.example"));
        assert!(!format!("{links:?}").contains("7, 7"));
    }

    #[test]
    fn machines_are_told_from_people() {
        let hit = |ua: Option<&'static str>, since: Option<i64>, burst: usize, prefetch: bool| Hit { kind: TokenKind::Click, user_agent: ua, prefetch_header: prefetch, since_send_ms: since, other_links_in_burst: burst };
        let firefox = Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
        assert_eq!(automated(&hit(firefox, Some(60_000), 0, false)), None);
        assert_eq!(automated(&hit(None, Some(60_000), 0, false)), Some("no user agent"));
        assert_eq!(automated(&hit(Some("Mozilla/5.0 Proofpoint URL Defense"), None, 0, false)), Some("machine user agent"));
        assert_eq!(automated(&hit(firefox, Some(500), 0, false)), Some("too soon after the send"));
        assert_eq!(automated(&hit(firefox, Some(60_000), 2, false)), Some("several links at once"));
        assert_eq!(automated(&hit(firefox, Some(60_000), 0, true)), Some("prefetch"));
    }
}

//! Credentials for funnel's HTTP APIs (`funnel serve`, the loader API, later the relay and
//! campaign services). Every route except `/health` and `/metrics` sits behind `require`.
//!
//! One secret token per deployment, read from the environment or a file — never from the
//! command line, where `ps` and shell history would show it:
//! `FUNNEL_API_TOKEN` (the token itself), else `FUNNEL_API_TOKEN_FILE` (a file holding it, e.g.
//! a Docker/Kubernetes secret), else `<stack dir>/api-token`, which `funnel stack up` writes
//! for the local stack. Clients send `Authorization: Bearer <token>` or HTTP Basic with the
//! user `FUNNEL_API_USER` (default `funnel`) and the token as password (browsers prompt for it).
//! Both sides are hashed with SHA-256 and compared in constant time, so neither the content
//! nor the length of the secret leaks through timing. The token never reaches a log or a
//! response: `ApiCredentials`' Debug prints a placeholder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::http::json_error;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_ENV: &str = "FUNNEL_API_TOKEN";
pub const TOKEN_FILE_ENV: &str = "FUNNEL_API_TOKEN_FILE";
pub const USER_ENV: &str = "FUNNEL_API_USER";
/// The local stack's token file, under the stack directory.
pub const STACK_TOKEN_FILE: &str = "api-token";
/// Shorter secrets are refused: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no API credentials: set {TOKEN_FILE_ENV} (a file holding the token) or {TOKEN_ENV}; `funnel stack up` writes one for the local stack ({STACK_TOKEN_FILE} in the stack directory)")]
    Missing,
    #[error("cannot read the API token file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the API token from {from} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort { from: String },
}

#[derive(Clone)]
pub struct ApiCredentials {
    user: String,
    token: Arc<str>,
    bearer_digest: [u8; 32],
    basic_digest: [u8; 32],
}

impl std::fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCredentials").field("user", &self.user).field("token", &"<redacted>").finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(bytes).as_slice());
    out
}

impl ApiCredentials {
    pub fn new(user: &str, token: &str, from: &str) -> Result<Self, CredentialsError> {
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(CredentialsError::TooShort { from: from.to_string() });
        }
        Ok(Self {
            user: user.to_string(),
            token: token.into(),
            bearer_digest: digest(token.as_bytes()),
            basic_digest: digest(format!("{user}:{token}").as_bytes()),
        })
    }

    /// From `FUNNEL_API_TOKEN`, `FUNNEL_API_TOKEN_FILE` or the stack's token file, in that order.
    pub fn load(stack_dir: &Path) -> Result<Self, CredentialsError> {
        let user = std::env::var(USER_ENV).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "funnel".into());
        match read_secret(TOKEN_ENV, TOKEN_FILE_ENV, &stack_dir.join(STACK_TOKEN_FILE)) {
            Ok(Some((token, from))) => Self::new(&user, &token, &from),
            Ok(None) => Err(CredentialsError::Missing),
            Err((path, source)) => Err(CredentialsError::Unreadable { path, source }),
        }
    }

    /// The header a client of funnel's APIs sends.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Whether an `Authorization` header value carries these credentials.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return false };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return bool::from(digest(rest.as_bytes()).ct_eq(&self.bearer_digest));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.as_bytes()) else { return false };
            return bool::from(digest(&decoded).ct_eq(&self.basic_digest));
        }
        false
    }
}

/// A secret from the environment variable `value_env`, else from the file that `file_env`
/// names (a Docker/Kubernetes secret), else from `default_file` when it exists — never from a
/// command-line flag, where `ps` and shell history would show it. Returns the text and where
/// it came from (for error messages: the place, never the secret).
pub fn read_secret(value_env: &str, file_env: &str, default_file: &Path) -> Result<Option<(String, String)>, (PathBuf, std::io::Error)> {
    if let Some(v) = std::env::var(value_env).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(Some((v, value_env.to_string())));
    }
    let path = match std::env::var_os(file_env).filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None if default_file.exists() => default_file.to_path_buf(),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| (path.clone(), e))?;
    Ok(Some((text, path.display().to_string())))
}

/// Create the local stack's token file when missing (random, readable by its owner only).
pub fn ensure_stack_token(stack_dir: &Path) -> anyhow::Result<PathBuf> {
    ensure_random_file(&stack_dir.join(STACK_TOKEN_FILE), 24)
}

/// Create `path` holding `bytes` random bytes as hex when it is missing (mode 0600): the local
/// stack's secrets. An existing file is kept.
pub fn ensure_random_file(path: &Path, bytes: usize) -> anyhow::Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness for {}: {e}", path.display()))?;
    let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(path.to_path_buf())
}

/// Middleware: 401 (with a Basic challenge, so a browser asks) unless the request carries the
/// credentials. Use with `axum::middleware::from_fn_with_state(credentials, require)`.
pub async fn require(axum::extract::State(creds): axum::extract::State<ApiCredentials>, req: Request, next: Next) -> Response {
    if creds.accepts(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    crate::runtime::metrics::metrics().errors.with_label_values(&["http", "unauthorized"]).inc();
    tracing::warn!(path = req.uri().path(), method = %req.method(), "request without valid credentials refused");
    let mut resp = json_error(StatusCode::UNAUTHORIZED, "missing or wrong credentials: send Authorization: Bearer <token> or HTTP Basic (user and token)");
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"funnel\", charset=\"UTF-8\""));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_accept_only_the_token() {
        let c = ApiCredentials::new("funnel", "0123456789abcdef0123", "test").unwrap();
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(c.accepts(Some(&h("Bearer 0123456789abcdef0123"))));
        assert!(c.accepts(Some(&h("bearer 0123456789abcdef0123"))));
        let basic = base64::engine::general_purpose::STANDARD.encode("funnel:0123456789abcdef0123");
        assert!(c.accepts(Some(&h(&format!("Basic {basic}")))));
        let wrong_user = base64::engine::general_purpose::STANDARD.encode("admin:0123456789abcdef0123");
        for bad in ["Bearer 0123456789abcdef012", "Bearer 0123456789abcdef01234", "Token 0123456789abcdef0123", "Bearer", "", &format!("Basic {wrong_user}"), "Basic !!!"] {
            assert!(!c.accepts(Some(&h(bad))), "{bad:?} must be refused");
        }
        assert!(!c.accepts(None));
        assert!(!format!("{c:?}").contains("0123456789"), "Debug must not print the token");
        assert!(ApiCredentials::new("funnel", "short", "test").is_err());
    }
}

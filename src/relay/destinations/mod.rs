//! The relay's destinations: the storefront's sGTM container (primary) and the ad platforms'
//! APIs. One module per destination; this table says which platform codes have an adapter and
//! what non-secret settings a credential for it needs.

/// Platform code → settings every credential must carry in `config` (the secret part — access
/// token, api_secret — goes in `secret`, encrypted).
pub const PLATFORMS: &[(&str, &[&str])] = &[
    ("meta_capi", &["pixel_id"]),
    ("ga4", &["measurement_id"]),
    ("tiktok", &["pixel_code"]),
    ("snapchat", &["pixel_id"]),
    ("pinterest", &["ad_account_id"]),
];

/// The platform code of the storefront's sGTM route: its global switch is this platform's
/// `is_active`; its settings live in `storefront_sgtm_config`, not in a credential.
pub const SGTM: &str = "sgtm";

pub fn required_config(platform: &str) -> Option<&'static [&'static str]> {
    PLATFORMS.iter().find(|(p, _)| *p == platform).map(|(_, keys)| *keys)
}

pub fn known_platforms() -> String {
    PLATFORMS.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
}

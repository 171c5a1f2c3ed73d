//! The sGTM / ad-platform events relay: OMS events in (HTTP or a direct database insert),
//! routed per storefront to its server-side GTM container and to ad platforms' APIs, with
//! kill switches at four levels, retries, a dead-letter topic and an audit of every attempt.
//!
//! - `db` — the `relay` schema (migrations in `sql/relay/migrations/`) and a connection pool.
//! - `crypto` — Fernet credentials (`ENCRYPTION_KEY`), interoperable with Python's.
//! - `oms`, `inbox` — the OMS batch contract and the inbox table every event enters through.
//! - `admin`, `service` — `funnel relay serve`: `/v1/events`, `/admin/v1/*`, health.
//! - `topics`, `run`, `intake` — `funnel run relay`: CDC of the relay tables, and the intake
//!   of inbox rows into `relay.event.received.v1`.
//! - `destinations` — one module per destination.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config_state;
pub mod crypto;
pub mod db;
pub mod deliver;
pub mod delivery;
pub mod demo;
pub mod destinations;
pub mod inbox;
pub mod intake;
pub mod metrics;
pub mod oms;
pub mod replay;
pub mod route;
pub mod run;
pub mod service;
pub mod topics;

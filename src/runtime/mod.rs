//! What every processor shares: Prometheus metrics, the `/metrics` + `/health` HTTP port,
//! and graceful shutdown on SIGTERM / Ctrl-C.

pub mod align;
pub mod auth;
mod batch;
pub mod health;
pub mod http;
pub mod instance;
pub mod lag;
pub mod metrics;
pub mod partitions;
pub mod processor;
pub mod shutdown;
pub mod supervise;
pub mod task;
pub mod throttle;

//! Confluent-compatible Schema Registry: the server funnel runs when no registry is
//! installable (`funnel registry`), the REST client every processor uses, and the
//! compatibility rules shared by both.

pub mod client;
pub mod compatibility;
pub mod server;

pub use client::RegistryClient;

/// TopicNameStrategy subject of a topic's key or value.
pub fn subject(topic: &str, is_key: bool) -> String {
    format!("{topic}-{}", if is_key { "key" } else { "value" })
}

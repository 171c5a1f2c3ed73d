//! funnel: a Kafka-native stream processing platform for marketing data.
//!
//! Layout follows the topology: `olist` (the source database), `cdc` (Postgres → topics),
//! `bronze` (topics → Delta), with the shared pieces they stand on: `kafka` (clients, admin,
//! dead letters), `avro` (Confluent wire format, Avro → Arrow), `registry` (a Confluent-compatible
//! Schema Registry and its client), `runtime` (metrics, health, shutdown) and `topology` (the
//! declared graph of topics and processors).

pub mod avro;
pub mod bench;
pub mod bronze;
pub mod c360;
pub mod campaigns;
pub mod cdc;
pub mod config;
pub mod demo;
pub mod domain;
pub mod kafka;
pub mod lake;
pub mod leads;
pub mod loader;
pub mod olist;
pub mod propensity;
pub mod registry;
pub mod relay;
pub mod retry;
pub mod runtime;
pub mod serve;
pub mod state;
pub mod stack;
pub mod summary;
pub mod topology;

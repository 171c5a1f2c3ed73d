//! The topology as data: `topology/topics.toml` declares every topic (partitions, cleanup
//! policy, key and value schema files under `schemas/`), `topology/processors.toml` every
//! processor (inputs, outputs, delivery guarantee per hop). `funnel topology` prints it and
//! a Mermaid diagram; `funnel topics create` creates the topics and registers the schemas.

pub mod digest;
pub mod names;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Deserialize;

use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::registry::{subject, RegistryClient};

#[derive(Debug, Deserialize)]
pub struct Topic {
    pub name: String,
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_cleanup")]
    pub cleanup_policy: String,
    /// Paths relative to `schemas/`.
    pub key_schema: Option<String>,
    pub value_schema: Option<String>,
    #[serde(default)]
    pub description: String,
    /// A public input: systems outside funnel's processors may produce here (seed scripts,
    /// `POST /topics` on `funnel serve`). Every other topic is written by its processor only.
    #[serde(default)]
    pub public: bool,
}

impl Topic {
    pub fn compacted(&self) -> bool {
        self.cleanup_policy == "compact"
    }
}

fn default_partitions() -> i32 {
    3
}
fn default_ordering() -> String {
    "arrival".into()
}
fn default_cleanup() -> String {
    "delete".into()
}

#[derive(Debug, Deserialize)]
pub struct Processor {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    pub delivery: String,
    /// The order its transform sees records in: `record-timestamp` (event-time alignment
    /// across all input partitions, `runtime::align`) or `arrival` (as fetched; offset order
    /// within a partition either way).
    #[serde(default = "default_ordering")]
    pub ordering: String,
    #[serde(default)]
    pub how: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
struct TopicsFile {
    topic: Vec<Topic>,
}
#[derive(Debug, Deserialize)]
struct ProcessorsFile {
    processor: Vec<Processor>,
}

pub struct Topology {
    pub root: PathBuf,
    pub topics: Vec<Topic>,
    pub processors: Vec<Processor>,
}

impl Topology {
    /// Load from a checkout (`dir` holds `topology/` and `schemas/`).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |f: &str| -> Result<String> {
            let p = dir.join("topology").join(f);
            std::fs::read_to_string(&p).with_context(|| format!("reading {} (run funnel from the repository root or pass --topology-dir)", p.display()))
        };
        let topics: TopicsFile = toml::from_str(&read("topics.toml")?).context("parsing topology/topics.toml")?;
        let processors: ProcessorsFile = toml::from_str(&read("processors.toml")?).context("parsing topology/processors.toml")?;
        Ok(Self { root: dir.to_path_buf(), topics: topics.topic, processors: processors.processor })
    }

    pub fn schema_text(&self, rel: &str) -> Result<String> {
        let p = self.root.join("schemas").join(rel);
        std::fs::read_to_string(&p).with_context(|| format!("reading schema {}", p.display()))
    }

    pub fn print(&self) {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["processor", "kind", "inputs", "outputs", "delivery", "ordering"]);
        for p in &self.processors {
            t.add_row(vec![p.name.clone(), p.kind.clone(), p.inputs.join("\n"), p.outputs.join("\n"), p.delivery.clone(), p.ordering.clone()]);
        }
        println!("{t}");
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["topic", "partitions", "cleanup", "key schema", "value schema"]);
        for tp in &self.topics {
            t.add_row(vec![
                tp.name.clone(),
                tp.partitions.to_string(),
                tp.cleanup_policy.clone(),
                tp.key_schema.clone().unwrap_or("-".into()),
                tp.value_schema.clone().unwrap_or("(raw bytes)".into()),
            ]);
        }
        println!("{t}");
    }

    /// Mermaid flowchart: processors as boxes, topics as stadiums, external systems as cylinders.
    pub fn mermaid(&self) -> String {
        let id = |s: &str| s.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let mut out = String::from("flowchart LR\n");
        for p in &self.processors {
            out.push_str(&format!("  p_{}[\"{} ({})\"]\n", id(&p.name), p.name, p.delivery));
            for i in &p.inputs {
                out.push_str(&format!("  {} --> p_{}\n", node(i, &id), id(&p.name)));
            }
            for o in &p.outputs {
                out.push_str(&format!("  p_{} --> {}\n", id(&p.name), node(o, &id)));
            }
        }
        out
    }

    /// Create the topics and register their schemas (BACKWARD compatibility is checked by
    /// the registry; an incompatible change fails here with its 409 message).
    pub async fn create(&self, brokers: &str, registry: &RegistryClient) -> Result<Vec<(String, String)>> {
        let specs: Vec<TopicSpec> =
            self.topics.iter().map(|t| TopicSpec { name: t.name.clone(), partitions: t.partitions, compact: t.compacted() }).collect();
        let created = ensure_topics(brokers, &specs).await?;
        let mut report = vec![];
        for t in &self.topics {
            for (is_key, file) in [(true, &t.key_schema), (false, &t.value_schema)] {
                if let Some(f) = file {
                    let id = registry.register(&subject(&t.name, is_key), &self.schema_text(f)?).await?;
                    report.push((subject(&t.name, is_key), format!("id {id}")));
                }
            }
            if created.contains(&t.name) {
                report.push((t.name.clone(), "topic created".into()));
            }
        }
        Ok(report)
    }
}

/// `kind:name` entries (postgres:, delta:, http:) are external systems; the rest are topics.
fn node(name: &str, id: &dyn Fn(&str) -> String) -> String {
    match name.split_once(':') {
        Some((kind, rest)) => format!("x_{}[(\"{kind}: {rest}\")]", id(name)),
        None => format!("t_{}([\"{name}\"])", id(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What processors.toml says of the order each processor sees its records in is what
    /// its code configures.
    #[test]
    fn processors_declare_the_ordering_their_code_uses() {
        let t = Topology::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let declared = |name: &str| t.processors.iter().find(|p| p.name == name).map(|p| p.ordering.clone()).unwrap_or_else(|| panic!("{name} in processors.toml"));
        for p in &t.processors {
            assert!(["record-timestamp", "arrival"].contains(&p.ordering.as_str()), "{}: ordering {:?}", p.name, p.ordering);
        }
        for (name, ordering) in [(crate::c360::PROCESSOR, crate::c360::ORDERING), ("seller-metrics-repartition", crate::leads::ORDERING), ("seller-metrics", "arrival"), ("leads-repartition", crate::leads::ORDERING), ("leads", "arrival")] {
            assert_eq!(declared(name), ordering, "{name}");
        }
    }
}

//! Topic names of the processors after CDC. CDC topics are `<cdc_prefix>.<schema>.<table>`; every
//! topic, consumer group and transactional id a processor owns is prefixed with the namespace
//! when one is set, so several deployments (or tests) can share one broker without colliding.

#[derive(Clone, Debug)]
pub struct TopicNames {
    pub cdc_prefix: String,
    pub namespace: String,
}

impl TopicNames {
    pub fn new(cdc_prefix: &str, namespace: &str) -> Self {
        Self { cdc_prefix: cdc_prefix.to_string(), namespace: namespace.trim_end_matches('.').to_string() }
    }

    /// The CDC topic of `schema.table`.
    pub fn cdc(&self, qualified_table: &str) -> String {
        format!("{}.{qualified_table}", self.cdc_prefix)
    }

    /// A topic (or group / transactional id) owned by funnel's processors.
    pub fn owned(&self, base: &str) -> String {
        if self.namespace.is_empty() {
            base.to_string()
        } else {
            format!("{}.{base}", self.namespace)
        }
    }

    /// Consumer group and transactional id of a processor.
    pub fn group(&self, processor: &str) -> String {
        self.owned(&format!("funnel-{processor}"))
    }

    /// Dead-letter topic of a processor.
    pub fn dead_letters(&self, processor: &str) -> String {
        self.owned(&crate::kafka::dead_letters::topic_for(processor))
    }

    /// The compacted changelog topic of a processor's state store.
    pub fn changelog(&self, processor: &str, store: &str) -> String {
        self.owned(&format!("_funnel.{processor}.{store}.changelog"))
    }

    /// Repartition topic of a processor: its input re-keyed by the key of its state.
    pub fn repartition(&self, processor: &str, name: &str) -> String {
        self.owned(&format!("_funnel.{processor}.{name}.repartition"))
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct NamespaceArg {
    /// Prefix for every topic, consumer group and transactional id the processors own
    /// (empty = the names in topology/topics.toml). Separate deployments on one broker.
    #[arg(long = "namespace", env = "FUNNEL_NAMESPACE", default_value = "")]
    pub namespace: String,
}

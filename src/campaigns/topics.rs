//! The campaigns' topics (namespaced like every processor's) and their schemas.

use crate::kafka::admin::TopicSpec;
use crate::topology::names::TopicNames;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Definition,
    Task,
    Requested,
    Ledger,
    Suppression,
    Engagement,
    Stats,
}

macro_rules! schema_pair {
    ($t:literal) => {
        (include_str!(concat!("../../schemas/campaigns/", $t, "-key.avsc")), include_str!(concat!("../../schemas/campaigns/", $t, "-value.avsc")))
    };
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::Definition, Kind::Task, Kind::Requested, Kind::Ledger, Kind::Suppression, Kind::Engagement, Kind::Stats];

    /// (key, value) schema texts.
    pub fn schemas(self) -> (&'static str, &'static str) {
        match self {
            Kind::Definition => schema_pair!("campaign.definition.v1"),
            Kind::Task => schema_pair!("campaign.task.v1"),
            Kind::Requested => schema_pair!("campaign.send.requested.v1"),
            Kind::Ledger => schema_pair!("campaign.send.ledger.v1"),
            Kind::Suppression => schema_pair!("campaign.suppression.v1"),
            Kind::Engagement => schema_pair!("campaign.engagement.v1"),
            Kind::Stats => schema_pair!("campaign.stats.v1"),
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct CampaignsConfig {
    /// Attempts per recipient when the SMTP server answers 4xx (temporary) before the send
    /// counts as failed.
    #[arg(long = "campaign-max-attempts", env = "CAMPAIGN_MAX_ATTEMPTS", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=12))]
    pub max_attempts: i32,
    /// Partitions of the send topics: the most sender workers that share the work.
    #[arg(long = "campaign-partitions", default_value_t = 4)]
    pub partitions: i32,
}

#[derive(Clone, Debug)]
pub struct CampaignTopics {
    pub names: TopicNames,
    pub definitions: String,
    pub tasks: String,
    pub requested: String,
    pub ledger: String,
    pub suppression: String,
    pub engagement: String,
    pub stats: String,
    pub max_attempts: i32,
    pub partitions: i32,
}

impl CampaignTopics {
    pub fn new(cfg: &CampaignsConfig, namespace: &str) -> Self {
        let names = TopicNames::new("", namespace);
        CampaignTopics {
            definitions: names.owned("campaign.definition.v1"),
            tasks: names.owned("campaign.task.v1"),
            requested: names.owned("campaign.send.requested.v1"),
            ledger: names.owned("campaign.send.ledger.v1"),
            suppression: names.owned("campaign.suppression.v1"),
            engagement: names.owned("campaign.engagement.v1"),
            stats: names.owned("campaign.stats.v1"),
            max_attempts: cfg.max_attempts,
            partitions: cfg.partitions,
            names,
        }
    }

    pub fn topic(&self, kind: Kind) -> String {
        match kind {
            Kind::Definition => self.definitions.clone(),
            Kind::Task => self.tasks.clone(),
            Kind::Requested => self.requested.clone(),
            Kind::Ledger => self.ledger.clone(),
            Kind::Suppression => self.suppression.clone(),
            Kind::Engagement => self.engagement.clone(),
            Kind::Stats => self.stats.clone(),
        }
    }

    /// Where a send waits for its attempt `n` (≥ 2): one topic per attempt, so every record of
    /// a topic waits the same backoff and they come due in offset order.
    pub fn retry(&self, n: i32) -> String {
        self.names.owned(&format!("campaign.send.retry.{n}.v1"))
    }

    /// Every topic of the campaigns, with its shape. Definitions, tasks and the ledger keep
    /// one key's records in order (one partition for the campaign-keyed ones: few records).
    pub fn specs(&self) -> Vec<TopicSpec> {
        let spec = |name: &String, partitions: i32, compact: bool| TopicSpec { name: name.clone(), partitions, compact };
        let mut v = vec![
            spec(&self.definitions, 1, true),
            spec(&self.tasks, 1, false),
            spec(&self.requested, self.partitions, false),
            spec(&self.ledger, self.partitions, true),
            spec(&self.suppression, 1, true),
            spec(&self.engagement, self.partitions, false),
            spec(&self.stats, 1, true),
        ];
        for n in 2..=self.max_attempts {
            v.push(TopicSpec { name: self.retry(n), partitions: self.partitions, compact: false });
        }
        v
    }
}

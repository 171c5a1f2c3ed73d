//! `relay-route`: each received event joined with its storefront's configuration (the global
//! table of `config_state`) → one delivery request per configured destination, on
//! `relay.delivery.requested.v1`. The kill switches are judged by the delivery worker at every
//! attempt (so a retry waiting when a switch turns off is stopped too); routing only plans.
//! An event whose storefront is unknown, or that has no destination at all, gets one request
//! to `none` carrying why, so its status still ends (failed / skipped), never silently.

use anyhow::Result;

use super::config_state::ConfigView;
use super::delivery::{Delivery, NONE};
use super::intake::Received;
use crate::avro::registered::Registered;
use crate::avro::serialization;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};

pub const PROCESSOR: &str = "relay-route";

pub struct Router {
    registry: RegistryClient,
    config: ConfigView,
    key: Registered,
    value: Registered,
    requested: String,
}

impl Router {
    pub async fn open(registry: &RegistryClient, config: ConfigView, requested: &str) -> Result<Self> {
        use super::delivery::schemas as s;
        let (key, value) = Registered::topic(registry, requested, s::DELIVERY_KEY, s::DELIVERY_VALUE).await?;
        Ok(Router { registry: registry.clone(), config, key, value, requested: requested.to_string() })
    }
}

/// The deliveries of one event under the current configuration.
pub fn plan(e: &Received, config: &ConfigView) -> Vec<Delivery> {
    let state = config.read();
    let Some(storefront) = state.storefront(e.storefront_id, &e.storefront_code) else {
        return vec![Delivery::first(e, NONE, 0, 1, Some(format!("unknown storefront {:?}", e.storefront_code)))];
    };
    let routes = state.routes(storefront.id);
    if routes.is_empty() {
        return vec![Delivery::first(e, NONE, 0, 1, Some(format!("storefront {:?} has no sGTM config and no platform credential", storefront.code)))];
    }
    let planned = routes.len() as i32;
    routes
        .iter()
        .map(|r| Delivery { storefront_id: Some(storefront.id), ..Delivery::first(e, &r.destination, r.config_id, planned, None) })
        .collect()
}

impl Transform for Router {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(bytes) = rec.value else { return Ok(Err("a received event without a value".into())) };
        let (_, value) = match serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok(x) => x,
            Err(reason) => return Ok(Err(reason)),
        };
        let event = match Received::from_value(&value) {
            Ok(e) => e,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut out = vec![];
        for d in plan(&event, &self.config) {
            let key = self.key.encode(d.key()).map_err(|e| anyhow::anyhow!("encoding a delivery key: {e}"))?;
            let value = self.value.encode(d.to_value()).map_err(|e| anyhow::anyhow!("encoding a delivery: {e}"))?;
            out.push(OutRecord { partition: None, topic: self.requested.clone(), key, value: Some(value) });
        }
        Ok(Ok(out))
    }
}

//! What the c360 engine keeps per key, in one store with a compacted changelog
//! (`_funnel.c360.state.changelog`): `p/<customer>` latest profile, `o/<order>` latest order,
//! `c/<customer>` last consolidated record (framed Avro, with its version), `clock` event time,
//! `epoch` when this state began.
//! Entries remember the input position they came from, so a re-delivered record is recognised
//! and skipped instead of applied twice.

use serde::{Deserialize, Serialize};

use crate::domain::events::{Order, Profile};

pub const CLOCK: &[u8] = b"clock";
/// When this state began (ms since the epoch): a replay starts a new state, so a new epoch,
/// the first part of every consolidated record's version.
pub const EPOCH: &[u8] = b"epoch";

pub fn profile_key(customer: &str) -> Vec<u8> {
    format!("p/{customer}").into_bytes()
}

pub fn order_key(order: &str) -> Vec<u8> {
    format!("o/{order}").into_bytes()
}

pub fn consolidated_key(customer: &str) -> Vec<u8> {
    format!("c/{customer}").into_bytes()
}

/// The latest profile of a customer; `None` once deleted (the position stays, to refuse
/// older re-deliveries).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileEntry {
    pub partition: i32,
    pub offset: i64,
    pub profile: Option<Profile>,
}

/// The latest state of an order. Its first state comes from `dom.order.created.v1`, later ones
/// from `dom.order.updated.v1`; offsets of the two topics are not comparable, so each is kept.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OrderEntry {
    pub created_offset: Option<i64>,
    pub updated_offset: Option<i64>,
    /// Record timestamp (ms) of the last delete: a creation produced before it is stale.
    #[serde(default)]
    pub deleted_at_ms: Option<i64>,
    /// A delete that arrived before anything else of the order (partition, offset on the
    /// updated topic, record timestamp): its customer is unknown until the creation shows up,
    /// which then emits and counts it.
    #[serde(default)]
    pub unattributed_delete: Option<(i32, i64, i64)>,
    /// `None` once deleted.
    pub order: Option<Order>,
}

impl OrderEntry {
    pub fn customer(&self) -> Option<&str> {
        self.order.as_ref().and_then(|o| o.customer_id.as_deref())
    }
}

/// Which entry a store key holds.
pub enum Entry<'a> {
    Profile(&'a str),
    Order(&'a str),
    Consolidated(&'a str),
    Clock,
    Epoch,
    Unknown,
}

pub fn entry_of(key: &[u8]) -> Entry<'_> {
    if key == CLOCK {
        return Entry::Clock;
    }
    if key == EPOCH {
        return Entry::Epoch;
    }
    let Ok(text) = std::str::from_utf8(key) else { return Entry::Unknown };
    match text.split_once('/') {
        Some(("p", id)) => Entry::Profile(id),
        Some(("o", id)) => Entry::Order(id),
        Some(("c", id)) => Entry::Consolidated(id),
        _ => Entry::Unknown,
    }
}

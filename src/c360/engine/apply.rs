//! Applying one input record to the engine's state: a profile, an order event (with its
//! retraction from the customer it was counted for), and the event-time clock.

use super::*;

impl C360Engine {
    pub(super) async fn apply_profile(&mut self, id: &str, profile: Option<Profile>, rec: &Arrived, out: &mut Vec<OutRecord>) -> Result<()> {
        let id = id.to_string();
        if self.profiles.get(&id).is_some_and(|e| e.partition == rec.partition && e.offset >= rec.offset) {
            return Ok(()); // re-delivered
        }
        if self.pending.joined.contains(&id) {
            // An order in the sub-batch must see the profile as it was: run the sub-batch first.
            out.extend(self.flush().await?);
        }
        let previous = self.profiles.get(&id);
        let profile = match (profile, previous.and_then(|e| e.profile.as_ref())) {
            (Some(mut new), Some(old)) if !self.keep_nulls => {
                for (slot, old) in [(&mut new.first_name, &old.first_name), (&mut new.last_name, &old.last_name), (&mut new.email, &old.email), (&mut new.city, &old.city), (&mut new.state, &old.state), (&mut new.zip_code_prefix, &old.zip_code_prefix)] {
                    if slot.is_none() {
                        slot.clone_from(old);
                    }
                }
                new.signup_at = new.signup_at.or(old.signup_at);
                Some(new)
            }
            (p, _) => p,
        };
        let entry = ProfileEntry { partition: rec.partition, offset: rec.offset, profile };
        self.store.put(state::profile_key(&id), json(&entry), out);
        self.profiles.insert(id.clone(), entry);
        self.bump(Some(&id));
        if self.reemit {
            let orders: Vec<Order> = self.customer_orders.get(&id).into_iter().flatten().filter_map(|o| self.orders.get(o).and_then(|e| e.order.clone())).collect();
            for order in orders {
                self.pending.events.push(PendingEvent { order, event_type: "profile-changed", topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset });
            }
            self.pending.joined.insert(id);
        }
        Ok(())
    }

    pub(super) fn apply_order(&mut self, id: &str, order: Option<Order>, rec: &Arrived, out: &mut Vec<OutRecord>) {
        let input = rec.input;
        let id = id.to_string();
        let mut entry = self.orders.get(&id).cloned().unwrap_or_default();
        let redelivered = match input {
            Input::Created => entry.created_offset.is_some_and(|o| o >= rec.offset),
            _ => entry.updated_offset.is_some_and(|o| o >= rec.offset),
        };
        if redelivered {
            return;
        }
        // A creation is older than any update of the same life of the order: it applies to an
        // unknown order, or to a deleted one when produced after the delete (offsets of the two
        // topics are not comparable; record timestamps are). The runtime's alignment hands a
        // creation over before the updates produced after it; one that still comes later is
        // true upstream disorder (an update stamped before its creation, or a partition the
        // alignment gave up waiting for) and is still an event.
        if input == Input::Created && (entry.order.is_some() || entry.deleted_at_ms.is_some_and(|d| rec.timestamp <= d)) {
            if entry.created_offset.is_none() {
                self.apply_overtaken_creation(id, entry, order, rec, out);
            }
            return; // otherwise a second creation of the same life (an upstream retry)
        }
        let old_customer = entry.customer().map(str::to_string);
        let event_type = match (&order, input) {
            (None, _) => "deleted",
            (Some(_), Input::Created) => "created",
            (Some(_), _) => "updated",
        };
        match input {
            Input::Created => {
                entry.created_offset = Some(rec.offset);
                entry.unattributed_delete = None; // a new life: that delete ended an unseen one
            }
            _ => entry.updated_offset = Some(rec.offset),
        }
        if order.is_none() {
            entry.deleted_at_ms = Some(rec.timestamp);
            if entry.order.is_none() && entry.created_offset.is_none() {
                entry.unattributed_delete = Some((rec.partition, rec.offset, rec.timestamp));
            }
        }
        let previous = std::mem::replace(&mut entry.order, order);
        let new_customer = entry.customer().map(str::to_string);
        if old_customer != new_customer {
            if let Some(c) = &old_customer {
                if let Some(set) = self.customer_orders.get_mut(c) {
                    set.remove(&id);
                }
            }
            if let Some(c) = &new_customer {
                self.customer_orders.entry(c.clone()).or_default().insert(id.clone());
            }
        }
        self.bump(old_customer.as_deref());
        if new_customer != old_customer {
            self.bump(new_customer.as_deref());
        }
        self.advance_clock(entry.order.as_ref(), rec);
        // The event row: the order as it is now (as it was, for a delete).
        if let Some(row) = entry.order.clone().or(previous) {
            if let Some(c) = &row.customer_id {
                self.pending.joined.insert(c.clone());
            }
            self.pending.events.push(PendingEvent { order: row, event_type, topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset });
        }
        self.store.put(state::order_key(&id), json(&entry), out);
        self.orders.insert(id, entry);
    }

    /// A creation that arrives after an update or the delete of the same order (its first
    /// creation: the caller skips repeats) — upstream disorder, which alignment cannot undo. The state keeps the later image, but the creation
    /// is an event as in any order of arrival: counted for its customer and enriched. Its row
    /// carries the order as it is now, because the lake keeps the last row per order: the
    /// current image while the order lives, `deleted` once it is gone (never bringing it back).
    /// A delete that came before anything else of this life of the order (its customer unknown
    /// until now) is emitted and counted with it, after the creation. Without this, the
    /// enriched stream and the version counter would depend on how the two topics happened to
    /// be interleaved.
    pub(super) fn apply_overtaken_creation(&mut self, id: String, mut entry: OrderEntry, order: Option<Order>, rec: &Arrived, out: &mut Vec<OutRecord>) {
        entry.created_offset = Some(rec.offset);
        // Only a delete of this life: one the creation precedes, with no later life live since.
        let unattributed = entry.unattributed_delete.take().filter(|(_, _, at)| entry.order.is_none() && rec.timestamp <= *at);
        if let Some(created) = order {
            let customer = created.customer_id.clone();
            self.advance_clock(Some(&created), rec);
            if let Some(c) = &customer {
                self.pending.joined.insert(c.clone());
            }
            self.bump(customer.as_deref());
            let here = |order: Order, event_type| PendingEvent { order, event_type, topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset };
            match (entry.order.clone(), unattributed) {
                (_, Some((partition, offset, _))) => {
                    self.bump(customer.as_deref());
                    self.pending.events.push(here(created.clone(), "created"));
                    self.pending.events.push(PendingEvent { order: created, event_type: "deleted", topic: self.topics.order_updated.clone(), partition, offset });
                }
                (Some(current), None) => self.pending.events.push(here(current, "created")),
                (None, None) => self.pending.events.push(here(created, "deleted")),
            }
        }
        self.store.put(state::order_key(&id), json(&entry), out);
        self.orders.insert(id, entry);
    }

    /// Event time: the latest purchase time seen, bounded by the record's own timestamp.
    pub(super) fn advance_clock(&mut self, order: Option<&Order>, rec: &Arrived) {
        if let Some(t) = order.and_then(|o| o.times[0]) {
            let t = t.min(rec.timestamp.saturating_mul(1000).saturating_add(CLOCK_ALLOWANCE_MICROS));
            self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        }
    }
}

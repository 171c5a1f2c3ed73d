//! The end of a sub-batch: the four queries of sql/c360/ over the keys it touched, the
//! segment evaluation, and the churn timers that fire as the event-time clock moves.

use super::*;

impl C360Engine {
    /// Run the pending sub-batch through the queries; returns outputs and changelog records.
    pub(super) async fn flush(&mut self) -> Result<Vec<OutRecord>> {
        let pending = std::mem::take(&mut self.pending);
        if pending.events.is_empty() && pending.affected.is_empty() {
            return Ok(vec![]);
        }
        let mut out = vec![];
        let ctx = SessionContext::new();
        let mut involved: BTreeSet<&str> = pending.affected.keys().map(String::as_str).collect();
        involved.extend(pending.events.iter().filter_map(|e| e.order.customer_id.as_deref()));
        self.register_profiles(&ctx, &involved.into_iter().collect::<Vec<_>>()).await?;

        let rows: Vec<EventRow<'_>> = pending.events.iter().map(|e| EventRow { order: &e.order, event_type: e.event_type, topic: &e.topic, partition: e.partition, offset: e.offset }).collect();
        ctx.register_batch("order_events", relations::order_events(&rows)?)?;
        for batch in run(&ctx, &self.sql.enriched).await? {
            for rec in from_arrow::records(&batch, &self.enriched.schema, &[]).context("customer_order_enriched rows")? {
                let id = text_of(&rec, "order_id").context("customer_order_enriched: order_id is null")?;
                out.push(OutRecord { partition: None, topic: self.topics.enriched.clone(), key: self.order_key.encode(key("order_id", &id))?, value: Some(self.enriched.encode(Value::Record(rec))?) });
            }
        }

        let ids: Vec<&str> = pending.affected.keys().map(String::as_str).collect();
        ctx.register_batch("affected_customers", relations::affected_customers(&ids)?)?;
        let orders: Vec<&Order> = ids.iter().filter_map(|id| self.customer_orders.get(*id)).flatten().filter_map(|o| self.orders.get(o).and_then(|e| e.order.as_ref())).collect();
        ctx.register_batch("customer_orders", relations::customer_orders(&orders)?)?;
        ctx.register_batch("customer_order_items", relations::customer_order_items(&orders)?)?;
        let mut records = vec![];
        for batch in run(&ctx, &self.sql.consolidated).await? {
            records.extend(from_arrow::records(&batch, &self.consolidated.schema, CONSOLIDATED_BY_ENGINE).context("customer_consolidated rows")?);
        }
        drop(ctx);

        let mut live = vec![];
        for mut rec in records {
            let id = text_of(&rec, "customer_id").context("customer_consolidated: customer_id is null")?;
            let stored = self.store.get(&state::consolidated_key(&id)).cloned();
            let previous = match stored {
                Some(bytes) => Some(self.decode_consolidated(&bytes).await?),
                None => None,
            };
            let has_profile = self.profiles.get(&id).is_some_and(|e| e.profile.is_some());
            let has_orders = self.customer_orders.get(&id).is_some_and(|s| !s.is_empty());
            if !has_profile && !has_orders {
                if previous.is_some() {
                    let k = self.customer_key.encode(key("customer_id", &id))?;
                    out.push(OutRecord { partition: None, topic: self.topics.consolidated.clone(), key: k.clone(), value: None });
                    out.push(OutRecord { partition: None, topic: self.topics.segment.clone(), key: k, value: None });
                    self.store.delete(&state::consolidated_key(&id), &mut out);
                }
                self.timers.set(&id, None);
                continue;
            }
            let applied = previous.as_ref().and_then(|p| long(field(p, "applied_events"))).unwrap_or(0) + pending.affected.get(&id).copied().unwrap_or(0);
            set(&mut rec, "applied_events", Value::Long(applied));
            set(&mut rec, "epoch", Value::Long(self.epoch));
            live.push((id, rec, previous));
        }
        self.evaluate(live, true, &mut out).await?;
        if !pending.events.is_empty() {
            self.store.put(state::CLOCK.to_vec(), json(&self.clock), &mut out);
        }
        Ok(out)
    }

    /// Run the segment query over consolidated records and emit: always (`always`, after a
    /// batch changed them) or only when stage or segment changed (timers).
    pub(super) async fn evaluate(&mut self, mut live: Vec<(String, Record, Option<Record>)>, always: bool, out: &mut Vec<OutRecord>) -> Result<()> {
        if live.is_empty() {
            return Ok(());
        }
        let ctx = self.segment_context(&live.iter().map(|(_, r, _)| r).collect::<Vec<_>>())?;
        let mut segments: HashMap<String, Record> = HashMap::new();
        for batch in run(&ctx, &self.sql.segment).await? {
            for rec in from_arrow::records(&batch, &self.segment.schema, SEGMENT_BY_ENGINE).context("customer_segment rows")? {
                let id = text_of(&rec, "customer_id").context("customer_segment: customer_id is null")?;
                segments.insert(id, rec);
            }
        }
        let clock = nullable(self.clock.map(Value::TimestampMicros));
        for (id, rec, previous) in &mut live {
            let mut seg = segments.remove(id.as_str()).with_context(|| format!("customer_segment returned no row for customer {id}"))?;
            let stage = text_of(&seg, "lifecycle_stage").unwrap_or_default();
            let segment = text_of(&seg, "segment").unwrap_or_default();
            let before = previous.as_ref().map(|p| (text_of(p, "lifecycle_stage"), text_of(p, "segment")));
            let changed = before.as_ref() != Some(&(Some(stage.clone()), Some(segment.clone())));
            if !always && !changed {
                continue;
            }
            set(rec, "lifecycle_stage", Value::String(stage));
            set(rec, "segment", Value::String(segment));
            set(rec, "stream_time", clock.clone());
            let k = self.customer_key.encode(key("customer_id", id))?;
            if changed {
                let (old_stage, old_segment) = before.unwrap_or((None, None));
                set(&mut seg, "previous_lifecycle_stage", nullable(old_stage.map(Value::String)));
                set(&mut seg, "previous_segment", nullable(old_segment.map(Value::String)));
                set(&mut seg, "stream_time", clock.clone());
                out.push(OutRecord { partition: None, topic: self.topics.segment.clone(), key: k.clone(), value: Some(self.segment.encode(Value::Record(seg))?) });
            }
            let bytes = self.consolidated.encode(Value::Record(rec.clone()))?;
            out.push(OutRecord { partition: None, topic: self.topics.consolidated.clone(), key: k, value: Some(bytes.clone()) });
            self.store.put(state::consolidated_key(id), bytes, out);
            let rec = rec.clone();
            self.set_timer(id, &rec);
        }
        Ok(())
    }

    /// Re-evaluate the customers whose event-time timer the clock has passed.
    pub(super) async fn fire_timers(&mut self, out: &mut Vec<OutRecord>) -> Result<()> {
        let Some(now) = self.clock else { return Ok(()) };
        let due = self.timers.take_due(now);
        if due.is_empty() {
            return Ok(());
        }
        let mut live = vec![];
        for id in due {
            let Some(bytes) = self.store.get(&state::consolidated_key(&id)).cloned() else { continue };
            let rec = self.decode_consolidated(&bytes).await?;
            live.push((id, rec.clone(), Some(rec)));
        }
        tracing::debug!(customers = live.len(), "c360: event-time timers fired");
        self.evaluate(live, false, out).await
    }
}

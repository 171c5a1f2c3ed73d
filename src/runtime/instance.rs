//! This process's name among several instances of the same processors (`funnel run
//! --instance-id`, e.g. the pod name). An exactly-once processor's transactional id must be
//! stable per instance and unique across them: one shared by two instances makes each fence
//! the other, and a new one after a crash cannot fence the dead run's open transaction.
//! Processors that can run as several instances of one group — stateless ones, and those
//! whose state is partitioned like their input — take `<group>-<instance>`; those that hold
//! their whole state in one process keep the group id, so a second instance fences the first
//! instead of computing with half the state.

use std::sync::OnceLock;

static ID: OnceLock<Option<String>> = OnceLock::new();

/// Set once at start (`funnel run`); later calls are ignored.
pub fn set(id: Option<String>) {
    let _ = ID.set(id.filter(|s| !s.is_empty()));
}

/// The instance id for a processor that can share its consumer group with other instances.
pub fn id() -> Option<String> {
    ID.get().cloned().flatten()
}

/// The instance id for a processor that holds its whole state in one process: none, with a
/// warning when one was given.
pub fn single(processor: &str) -> Option<String> {
    if let Some(i) = id() {
        tracing::warn!(processor, instance = i, "this processor holds its whole state in one instance: --instance-id is not used for it (its transactional id stays its group id, so a second instance fences the first)");
    }
    None
}

/// `<group>-<instance>`, or the group id for one instance.
pub fn transactional_id(group: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("{group}-{i}"),
        None => group.to_string(),
    }
}

//! Compatibility levels as Confluent defines them, checked with Avro schema resolution.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }
}

/// Check `new` against the subject's existing versions (oldest first).
/// Returns the reasons it is incompatible, empty when it is compatible.
pub fn check(level: Level, new: &Schema, existing: &[Schema]) -> Vec<String> {
    let against: &[Schema] = match level {
        Level::None => return vec![],
        Level::Backward | Level::Forward | Level::Full => existing.last().map(std::slice::from_ref).unwrap_or(&[]),
        _ => existing,
    };
    let (backward, forward) = match level {
        Level::Backward | Level::BackwardTransitive => (true, false),
        Level::Forward | Level::ForwardTransitive => (false, true),
        _ => (true, true),
    };
    let mut reasons = vec![];
    for old in against {
        // Backward: consumers on the new schema read data written with the old one.
        if backward {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                reasons.push(format!("new schema cannot read data written with an existing version: {e}"));
            }
        }
        if forward {
            if let Err(e) = SchemaCompatibility::can_read(new, old) {
                reasons.push(format!("existing version cannot read data written with the new schema: {e}"));
            }
        }
    }
    reasons
}

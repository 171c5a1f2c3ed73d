//! The ksql-style definitions of `sql/c360/*.sql`, parsed apart from the runtime (Arroyo's
//! split): `CREATE TABLE|STREAM name WITH (OPTION = 'value', …) AS SELECT …;`. The header says
//! what the engine does with the query's rows (upsert table, stream, output topic, timers);
//! the SELECT itself is planned and run by DataFusion over the relations the engine provides.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("{file}: expected `CREATE TABLE|STREAM <name> WITH (...) AS SELECT|WITH ...;`")]
    Shape { file: String },
    #[error("{file}: option {option}: {reason}")]
    Option { file: String, option: String, reason: String },
    #[error("the c360 engine needs a definition named {0} (files in sql/c360/)")]
    Missing(&'static str),
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Table,
    Stream,
}

#[derive(Clone, Debug)]
pub struct Definition {
    pub file: String,
    pub kind: Kind,
    pub name: String,
    /// Option names upper-cased; values as written (quotes removed).
    pub options: BTreeMap<String, String>,
    pub select: String,
}

impl Definition {
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> Result<bool, DefinitionError> {
        match self.option(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(self.bad(name, format!("expected true or false, got {other:?}"))),
        }
    }

    pub fn bad(&self, option: &str, reason: impl Into<String>) -> DefinitionError {
        DefinitionError::Option { file: self.file.clone(), option: option.into(), reason: reason.into() }
    }

    /// `RECOMPUTE_AT = '<column> + <n> days'`: the column and the delay in microseconds.
    pub fn recompute_at(&self) -> Result<Option<(String, i64)>, DefinitionError> {
        let Some(text) = self.option("RECOMPUTE_AT") else { return Ok(None) };
        static DELAY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)^\s*(\w+)\s*\+\s*(\d+)\s*days?\s*$").expect("valid regex"));
        let caps = DELAY.captures(text).ok_or_else(|| self.bad("RECOMPUTE_AT", format!("expected '<column> + <n> days', got {text:?}")))?;
        let days: i64 = caps[2].parse().map_err(|_| self.bad("RECOMPUTE_AT", "day count out of range"))?;
        let micros = days.checked_mul(86_400_000_000).ok_or_else(|| self.bad("RECOMPUTE_AT", "day count out of range"))?;
        Ok(Some((caps[1].to_string(), micros)))
    }
}

/// Parse one file's text.
pub fn parse(file: &str, text: &str) -> Result<Definition, DefinitionError> {
    let without_comments: String = text.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    // Compiled once: building a regex costs far more than matching a file.
    static HEADER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?is)^\s*CREATE\s+(TABLE|STREAM)\s+(\w+)\s+WITH\s*\((.*?)\)\s*AS\s+((?:SELECT|WITH)\b.*?)\s*;?\s*$").expect("valid regex"));
    static OPTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)(\w+)\s*=\s*(?:'([^']*)'|(\w+))").expect("valid regex"));
    let caps = HEADER.captures(&without_comments).ok_or_else(|| DefinitionError::Shape { file: file.into() })?;
    let kind = if caps[1].eq_ignore_ascii_case("table") { Kind::Table } else { Kind::Stream };
    let options = OPTION
        .captures_iter(&caps[3])
        .map(|c| (c[1].to_ascii_uppercase(), c.get(2).or(c.get(3)).map(|m| m.as_str().to_string()).unwrap_or_default()))
        .collect();
    Ok(Definition { file: file.into(), kind, name: caps[2].to_string(), options, select: caps[4].to_string() })
}

/// The definitions shipped with funnel (`sql/c360/`, compiled in).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("1_customer_profile.sql", include_str!("../../sql/c360/1_customer_profile.sql")),
    ("2_customer_order_enriched.sql", include_str!("../../sql/c360/2_customer_order_enriched.sql")),
    ("3_customer_consolidated.sql", include_str!("../../sql/c360/3_customer_consolidated.sql")),
    ("4_customer_segment.sql", include_str!("../../sql/c360/4_customer_segment.sql")),
];

/// The four queries the engine runs, by role.
#[derive(Clone, Debug)]
pub struct C360Sql {
    pub profile: Definition,
    pub enriched: Definition,
    pub consolidated: Definition,
    pub segment: Definition,
}

impl C360Sql {
    /// From a directory of `*.sql` files (`--sql-dir`), or the built-in ones.
    pub fn load(dir: Option<&Path>) -> Result<Self, DefinitionError> {
        let mut defs = vec![];
        match dir {
            None => {
                for (file, text) in BUILT_IN {
                    defs.push(parse(file, text)?);
                }
            }
            Some(dir) => {
                let io = |source| DefinitionError::Io { path: dir.display().to_string(), source };
                let mut files: Vec<_> = std::fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "sql")).collect();
                files.sort();
                for path in files {
                    let text = std::fs::read_to_string(&path).map_err(|source| DefinitionError::Io { path: path.display().to_string(), source })?;
                    defs.push(parse(&path.display().to_string(), &text)?);
                }
            }
        }
        let mut take = |name: &'static str, kind: Kind| -> Result<Definition, DefinitionError> {
            let i = defs.iter().position(|d| d.name == name).ok_or(DefinitionError::Missing(name))?;
            let d = defs.remove(i);
            if d.kind != kind {
                return Err(d.bad("kind", format!("{name} must be a {}", if kind == Kind::Table { "TABLE" } else { "STREAM" })));
            }
            Ok(d)
        };
        Ok(C360Sql {
            profile: take("customer_profile", Kind::Table)?,
            enriched: take("customer_order_enriched", Kind::Stream)?,
            consolidated: take("customer_consolidated", Kind::Table)?,
            segment: take("customer_segment", Kind::Table)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day count whose microseconds overflow i64 is an error naming the option, not a panic.
    #[test]
    fn a_huge_recompute_delay_is_refused() {
        let d = parse("x.sql", "CREATE TABLE t WITH (RECOMPUTE_AT = 'last_order_at + 999999999999 days') AS SELECT 1").unwrap();
        assert!(d.recompute_at().unwrap_err().to_string().contains("out of range"));
        let d = parse("x.sql", "CREATE TABLE t WITH (RECOMPUTE_AT = 'last_order_at + 180 days') AS SELECT 1").unwrap();
        assert_eq!(d.recompute_at().unwrap(), Some(("last_order_at".to_string(), 180 * 86_400_000_000)));
    }

    #[test]
    fn parses_headers_options_and_select() {
        let d = parse("x.sql", "-- a comment\nCREATE TABLE t WITH (KAFKA_TOPIC = 'a.b', key='id', Flag = true)\nAS SELECT a, b -- trailing\nFROM x;\n").unwrap();
        assert_eq!((d.kind, d.name.as_str()), (Kind::Table, "t"));
        assert_eq!(d.option("KAFKA_TOPIC"), Some("a.b"));
        assert_eq!(d.option("KEY"), Some("id"));
        assert!(d.flag("FLAG").unwrap());
        assert!(d.select.starts_with("SELECT a, b"));
        assert!(!d.select.contains("trailing"));
        assert!(matches!(parse("y.sql", "SELECT 1"), Err(DefinitionError::Shape { .. })));
    }

    #[test]
    fn built_in_definitions_load_with_their_timer() {
        let sql = C360Sql::load(None).unwrap();
        assert_eq!(sql.segment.recompute_at().unwrap(), Some(("last_order_at".into(), 180 * 86_400_000_000)));
        assert!(!sql.enriched.flag("REEMIT_ON_TABLE_CHANGE").unwrap());
        assert_eq!(sql.profile.option("NULLS"), Some("keep"));
    }
}

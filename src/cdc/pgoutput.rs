//! Decoder for the `pgoutput` logical decoding format (protocol version 1), as returned by
//! `pg_logical_slot_peek_binary_changes`.

use bytes::Buf;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown pgoutput message tag {0:?}")]
    UnknownTag(char),
    #[error("unknown tuple cell kind {0:?}")]
    UnknownCell(char),
    #[error("{0} out of range")]
    OutOfRange(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    /// An unchanged TOASTed value that pgoutput does not repeat.
    Unchanged,
    Text(String),
}

pub type Tuple = Vec<Cell>;

#[derive(Clone, Debug, PartialEq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PgMessage {
    Begin { final_lsn: u64, commit_ts_us: i64, xid: u32 },
    Commit { commit_lsn: u64, end_lsn: u64, commit_ts_us: i64 },
    Relation(Relation),
    Insert { rel: u32, new: Tuple },
    Update { rel: u32, old: Option<Tuple>, new: Tuple },
    Delete { rel: u32, old: Tuple },
    Truncate { rels: Vec<u32> },
    /// Origin, Type and logical Message: nothing CDC needs.
    Ignored(char),
}

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.0.get_i16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.0.get_u32())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.0.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.0.get_i64())
    }
    /// A Postgres timestamp (µs since 2000-01-01) as µs since the Unix epoch.
    fn timestamp(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.i64(what)?.checked_add(PG_EPOCH_OFFSET_US).ok_or(DecodeError::OutOfRange(what))
    }
    fn cstring(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self.0.iter().position(|b| *b == 0).ok_or(DecodeError::Truncated(what))?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0.advance(end + 1);
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16("tuple column count")?;
        let mut cells = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            cells.push(match self.u8("tuple cell kind")? {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                b't' | b'b' => {
                    let len = self.i32("tuple cell length")?.max(0) as usize;
                    self.need(len, "tuple cell")?;
                    let s = String::from_utf8_lossy(&self.0[..len]).into_owned();
                    self.0.advance(len);
                    Cell::Text(s)
                }
                other => return Err(DecodeError::UnknownCell(other as char)),
            });
        }
        Ok(cells)
    }
}

pub fn decode(data: &[u8]) -> Result<PgMessage, DecodeError> {
    let mut r = Reader(data);
    let tag = r.u8("tag")?;
    Ok(match tag {
        b'B' => PgMessage::Begin { final_lsn: r.u64("begin lsn")?, commit_ts_us: r.timestamp("begin ts")?, xid: r.u32("xid")? },
        b'C' => {
            let _flags = r.u8("commit flags")?;
            PgMessage::Commit { commit_lsn: r.u64("commit lsn")?, end_lsn: r.u64("end lsn")?, commit_ts_us: r.timestamp("commit ts")? }
        }
        b'R' => {
            let id = r.u32("relation id")?;
            let schema = r.cstring("namespace")?;
            let name = r.cstring("relation name")?;
            let _identity = r.u8("replica identity")?;
            let n = r.i16("column count")?;
            let mut columns = vec![];
            for _ in 0..n {
                let _flags = r.u8("column flags")?;
                columns.push(r.cstring("column name")?);
                let _type_oid = r.u32("type oid")?;
                let _typmod = r.i32("typmod")?;
            }
            PgMessage::Relation(Relation { id, schema, name, columns })
        }
        b'I' => {
            let rel = r.u32("relation id")?;
            let _n = r.u8("N")?;
            PgMessage::Insert { rel, new: r.tuple()? }
        }
        b'U' => {
            let rel = r.u32("relation id")?;
            let mut kind = r.u8("U kind")?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8("N")?;
            }
            if kind != b'N' {
                return Err(DecodeError::UnknownCell(kind as char));
            }
            PgMessage::Update { rel, old, new: r.tuple()? }
        }
        b'D' => {
            let rel = r.u32("relation id")?;
            let _kind = r.u8("K/O")?;
            PgMessage::Delete { rel, old: r.tuple()? }
        }
        b'T' => {
            let n = r.u32("relation count")?;
            let _options = r.u8("truncate options")?;
            let mut rels = vec![];
            for _ in 0..n {
                rels.push(r.u32("relation id")?);
            }
            PgMessage::Truncate { rels }
        }
        b'O' | b'Y' | b'M' => PgMessage::Ignored(tag as char),
        other => return Err(DecodeError::UnknownTag(other as char)),
    })
}

/// Parse Postgres' `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        for s in ["0/16B6C50", "16/B374D848", "0/0"] {
            assert_eq!(format_lsn(parse_lsn(s).unwrap()), s);
        }
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        assert!(decode(b"B\x00\x00").is_err());
        assert!(decode(b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab").is_err());
        assert!(decode(b"").is_err());
        assert!(matches!(decode(b"Z"), Err(DecodeError::UnknownTag('Z'))));
    }

    /// Found by `scripts/fuzz` (pgoutput): a commit whose timestamp overflowed when moved to the
    /// Unix epoch panicked (debug) or wrapped (release).
    #[test]
    fn a_timestamp_out_of_range_is_an_error_not_an_overflow() {
        let crash = b"C\x00\x00\x26\x00\x00\x00\x01\x6b\x6c\x50\x00\x00\x00\x00\x02\xf9\x93\x7f\xff\xfd\x83\x5a\x73\x57\xc0\x00";
        assert!(matches!(decode(crash), Err(DecodeError::OutOfRange("commit ts"))));
        let mut begin = b"B".to_vec();
        begin.extend(0u64.to_be_bytes());
        begin.extend(i64::MAX.to_be_bytes());
        begin.extend(1u32.to_be_bytes());
        assert!(matches!(decode(&begin), Err(DecodeError::OutOfRange("begin ts"))));
    }

    #[test]
    fn insert_decodes_cells() {
        let msg = b"I\x00\x00\x00\x07N\x00\x03t\x00\x00\x00\x02abnu";
        assert_eq!(decode(msg).unwrap(), PgMessage::Insert { rel: 7, new: vec![Cell::Text("ab".into()), Cell::Null, Cell::Unchanged] });
    }
}

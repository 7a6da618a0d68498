//! A checkpoint's bytes as Kafka records: [`split`] cuts a serialized engine snapshot into pieces
//! no larger than a record may be, each with a fixed binary header; [`join`] puts them back
//! together and refuses anything incomplete, mixed or corrupt. [`read_header`] reads what the
//! recovery decision needs ([`crate::recovery::CheckpointFacts`]) without the state.
//!
//! What it does not: serialize the engine (the snapshot is opaque bytes here), choose record keys
//! or talk to Kafka, or decide which checkpoint to load ([`crate::recovery`]).
//!
//! # Piece layout (big-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `VGCK` |
//! | 1 | layout version ([`LAYOUT_VERSION`]) |
//! | 4 | partition (i32) |
//! | 8 | offset: the state is the engine's after the records before it (i64) |
//! | 4 | engine state version (u32) |
//! | 8 + 4 | clock watermark: seconds (i64), nanoseconds (u32; `u32::MAX`: none) |
//! | 4 + 4 | piece index, piece count (u32) |
//! | 8 | snapshot length (u64) |
//! | 8 | snapshot checksum (FNV-1a 64) |
//! | rest | the piece's bytes |
//!
//! The header is fixed-size and independent of the state version, so a build can tell an
//! incompatible checkpoint from an unreadable one. The checksum catches pieces of two writes of
//! the same offset mixed together, and corruption, which would otherwise load a wrong state.

use chrono::{DateTime, Utc};

use crate::recovery::CheckpointFacts;

/// Version of the piece layout (not of the engine state inside).
pub const LAYOUT_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"VGCK";
/// Size of every piece's header.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 4 + 8 + 4 + 4 + 4 + 8 + 8;
const NO_CLOCK: u32 = u32::MAX;

/// What a checkpoint is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub partition: i32,
    /// The state is the engine's after every record before this offset.
    pub offset: i64,
    /// [`crate::recovery::Assignment::state_version`] of the build that wrote it.
    pub state_version: u32,
    /// The engine's clock watermark then.
    pub clock_watermark: Option<DateTime<Utc>>,
}

impl CheckpointMeta {
    /// The facts the recovery decision reads.
    pub fn facts(&self) -> CheckpointFacts {
        CheckpointFacts {
            offset: self.offset,
            state_version: self.state_version,
            clock_watermark: self.clock_watermark,
            unreadable: false,
        }
    }
}

/// One piece's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceHeader {
    pub meta: CheckpointMeta,
    pub index: u32,
    pub count: u32,
    /// Length of the whole snapshot.
    pub total_len: u64,
    pub checksum: u64,
}

/// Why pieces do not make a checkpoint (all mean: unreadable, fall back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "a record of {max_record} bytes cannot hold a checkpoint piece (header: {HEADER_LEN})"
    )]
    RecordTooSmall { max_record: usize },
    #[error("checkpoint piece of {len} bytes is shorter than its header")]
    Truncated { len: usize },
    #[error("not a checkpoint piece (bad magic)")]
    BadMagic,
    #[error("checkpoint piece layout {0} is unknown to this build")]
    UnknownLayout(u8),
    #[error("no checkpoint pieces")]
    Empty,
    #[error("checkpoint pieces of different checkpoints")]
    Mixed,
    #[error("checkpoint piece {index} of {count} is missing")]
    Missing { index: u32, count: u32 },
    #[error("checkpoint piece {index} is out of range or repeated")]
    BadIndex { index: u32 },
    #[error("checkpoint is {got} bytes, its header says {expected}")]
    Length { expected: u64, got: u64 },
    #[error("checkpoint checksum mismatch")]
    Checksum,
    #[error("checkpoint piece header holds an impossible clock watermark")]
    BadClock,
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher), enough to detect
/// accidents (this is not a defence against forgery: the topic is the processors' own).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Cuts `snapshot` into pieces of at most `max_record` bytes each, header included. An empty
/// snapshot still makes one piece, so every checkpoint has at least one record.
pub fn split(
    meta: CheckpointMeta,
    snapshot: &[u8],
    max_record: usize,
) -> Result<Vec<Vec<u8>>, CheckpointError> {
    if max_record <= HEADER_LEN {
        return Err(CheckpointError::RecordTooSmall { max_record });
    }
    let room = max_record - HEADER_LEN;
    let count = snapshot.len().div_ceil(room).max(1);
    let count_u32 =
        u32::try_from(count).map_err(|_| CheckpointError::RecordTooSmall { max_record })?;
    let checksum = fnv1a(snapshot);
    let (secs, nanos) = match meta.clock_watermark {
        Some(c) => (c.timestamp(), c.timestamp_subsec_nanos()),
        None => (0, NO_CLOCK),
    };
    let pieces = (0..count)
        .map(|i| {
            let data =
                &snapshot[(i * room).min(snapshot.len())..((i + 1) * room).min(snapshot.len())];
            let mut p = Vec::with_capacity(HEADER_LEN + data.len());
            p.extend_from_slice(MAGIC);
            p.push(LAYOUT_VERSION);
            p.extend_from_slice(&meta.partition.to_be_bytes());
            p.extend_from_slice(&meta.offset.to_be_bytes());
            p.extend_from_slice(&meta.state_version.to_be_bytes());
            p.extend_from_slice(&secs.to_be_bytes());
            p.extend_from_slice(&nanos.to_be_bytes());
            p.extend_from_slice(&(i as u32).to_be_bytes());
            p.extend_from_slice(&count_u32.to_be_bytes());
            p.extend_from_slice(&(snapshot.len() as u64).to_be_bytes());
            p.extend_from_slice(&checksum.to_be_bytes());
            p.extend_from_slice(data);
            p
        })
        .collect();
    Ok(pieces)
}

/// Reads a piece's header.
pub fn read_header(piece: &[u8]) -> Result<PieceHeader, CheckpointError> {
    if piece.len() < HEADER_LEN {
        return Err(CheckpointError::Truncated { len: piece.len() });
    }
    if &piece[..4] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if piece[4] != LAYOUT_VERSION {
        return Err(CheckpointError::UnknownLayout(piece[4]));
    }
    let mut at = 5;
    let mut take = |n: usize| {
        let s = &piece[at..at + n];
        at += n;
        s
    };
    let partition = i32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let offset = i64::from_be_bytes(take(8).try_into().expect("8 bytes"));
    let state_version = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let secs = i64::from_be_bytes(take(8).try_into().expect("8 bytes"));
    let nanos = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let index = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let count = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
    let total_len = u64::from_be_bytes(take(8).try_into().expect("8 bytes"));
    let checksum = u64::from_be_bytes(take(8).try_into().expect("8 bytes"));
    let clock_watermark = if nanos == NO_CLOCK {
        None
    } else {
        // Out of chrono's range only if corrupt: refuse rather than invent a time.
        Some(DateTime::from_timestamp(secs, nanos).ok_or(CheckpointError::BadClock)?)
    };
    Ok(PieceHeader {
        meta: CheckpointMeta {
            partition,
            offset,
            state_version,
            clock_watermark,
        },
        index,
        count,
        total_len,
        checksum,
    })
}

/// Puts pieces (in any order) back together into the snapshot they were split from.
pub fn join<P: AsRef<[u8]>>(pieces: &[P]) -> Result<(CheckpointMeta, Vec<u8>), CheckpointError> {
    let first = read_header(pieces.first().ok_or(CheckpointError::Empty)?.as_ref())?;
    let mut slots: Vec<Option<&[u8]>> = vec![None; first.count as usize];
    for piece in pieces {
        let piece = piece.as_ref();
        let h = read_header(piece)?;
        if (h.meta, h.count, h.total_len, h.checksum)
            != (first.meta, first.count, first.total_len, first.checksum)
        {
            return Err(CheckpointError::Mixed);
        }
        match slots.get_mut(h.index as usize) {
            Some(slot @ None) => *slot = Some(&piece[HEADER_LEN..]),
            _ => return Err(CheckpointError::BadIndex { index: h.index }),
        }
    }
    let mut snapshot = Vec::with_capacity(first.total_len.min(1 << 30) as usize);
    for (index, slot) in slots.iter().enumerate() {
        let data = slot.ok_or(CheckpointError::Missing {
            index: index as u32,
            count: first.count,
        })?;
        snapshot.extend_from_slice(data);
    }
    if snapshot.len() as u64 != first.total_len {
        return Err(CheckpointError::Length {
            expected: first.total_len,
            got: snapshot.len() as u64,
        });
    }
    if fnv1a(&snapshot) != first.checksum {
        return Err(CheckpointError::Checksum);
    }
    Ok((first.meta, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            partition: 3,
            offset: 1_234_567,
            state_version: 7,
            clock_watermark: Some(
                "2026-03-02T09:00:00.000000001Z"
                    .parse::<DateTime<Utc>>()
                    .unwrap(),
            ),
        }
    }

    fn snapshot(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pieces_fit_the_record_limit_and_join_back_in_any_order() {
        for (len, max) in [
            (0, HEADER_LEN + 1),
            (1, HEADER_LEN + 1),
            (1000, HEADER_LEN + 100),
            (1000, HEADER_LEN + 1000),
            (1001, 4096),
        ] {
            let s = snapshot(len);
            let mut pieces = split(meta(), &s, max).unwrap();
            assert!(pieces.iter().all(|p| p.len() <= max), "{len} {max}");
            assert_eq!(pieces.len(), len.div_ceil(max - HEADER_LEN).max(1));
            pieces.reverse();
            assert_eq!(join(&pieces).unwrap(), (meta(), s));
        }
    }

    #[test]
    fn the_header_gives_the_recovery_facts_without_the_state() {
        let pieces = split(meta(), &snapshot(500), HEADER_LEN + 200).unwrap();
        let h = read_header(&pieces[2]).unwrap();
        assert_eq!((h.index, h.count, h.total_len), (2, 3, 500));
        assert_eq!(h.meta, meta());
        assert_eq!(h.meta.facts().offset, 1_234_567);
        assert_eq!(h.meta.facts().state_version, 7);
        assert_eq!(h.meta.facts().clock_watermark, meta().clock_watermark);
        let none = CheckpointMeta {
            clock_watermark: None,
            ..meta()
        };
        let pieces = split(none, b"x", 100).unwrap();
        assert_eq!(read_header(&pieces[0]).unwrap().meta.clock_watermark, None);
    }

    #[test]
    fn a_record_limit_below_the_header_is_refused() {
        assert_eq!(
            split(meta(), b"abc", HEADER_LEN),
            Err(CheckpointError::RecordTooSmall {
                max_record: HEADER_LEN
            })
        );
    }

    #[test]
    fn incomplete_mixed_or_corrupt_pieces_are_refused() {
        let s = snapshot(300);
        let pieces = split(meta(), &s, HEADER_LEN + 100).unwrap();
        assert_eq!(join::<Vec<u8>>(&[]), Err(CheckpointError::Empty));
        assert_eq!(
            join(&pieces[..2]),
            Err(CheckpointError::Missing { index: 2, count: 3 })
        );
        let twice = [&pieces[0], &pieces[0], &pieces[1], &pieces[2]];
        assert_eq!(join(&twice), Err(CheckpointError::BadIndex { index: 0 }));

        // A piece of another write at the same offset (other content, so other checksum).
        let mut other = s.clone();
        other[0] ^= 1;
        let others = split(meta(), &other, HEADER_LEN + 100).unwrap();
        let mixed = [&pieces[0], &others[1], &pieces[2]];
        assert_eq!(join(&mixed), Err(CheckpointError::Mixed));

        // A flipped bit in the data.
        let mut corrupt = pieces.clone();
        corrupt[1][HEADER_LEN + 5] ^= 0x10;
        assert_eq!(join(&corrupt), Err(CheckpointError::Checksum));
        // A truncated piece.
        let mut short = pieces.clone();
        short[2].pop();
        assert_eq!(
            join(&short),
            Err(CheckpointError::Length {
                expected: 300,
                got: 299
            })
        );
        assert_eq!(
            read_header(&pieces[0][..10]),
            Err(CheckpointError::Truncated { len: 10 })
        );
        let mut foreign = pieces[0].clone();
        foreign[0] = b'X';
        assert_eq!(read_header(&foreign), Err(CheckpointError::BadMagic));
        let mut newer = pieces[0].clone();
        newer[4] = LAYOUT_VERSION + 1;
        assert_eq!(
            read_header(&newer),
            Err(CheckpointError::UnknownLayout(LAYOUT_VERSION + 1))
        );
    }
}

//! A checkpoint's bytes as Kafka records: [`split`] cuts a serialized engine snapshot into pieces
//! no larger than a record may be, each with a fixed binary header; [`join`] puts them back
//! together and refuses anything incomplete, mixed or corrupt. [`read_header`] reads what the
//! recovery decision needs ([`crate::recovery::CheckpointFacts`]) without the state.
//!
//! Also pure, for the runner: the record keys ([`piece_key`]: partition, slot, piece), what the
//! tail of a checkpoint partition holds ([`gather`]: the checkpoint in each slot, complete or
//! not), and when to write the next one ([`Schedule`]).
//!
//! What it does not: serialize the engine (the snapshot is opaque bytes here), talk to Kafka
//! (`runner::checkpoint_io`), or decide which checkpoint to load ([`crate::recovery`]).
//!
//! # Two slots per partition
//!
//! The `checkpoints` topic is compacted: Kafka keeps the latest record of each key. A
//! partition's checkpoints alternate between two *slots* (keys `p<partition>/s<slot>/<piece>`), so
//! the previous checkpoint survives while the next one is written: a crash half-way through a
//! write leaves one slot mixed (refused by its checksum and piece headers) and the other whole.
//! Two checkpoints also cover a lost commit: the newer one may be after the committed offset, the
//! older one is not ([`Schedule`] writes a new checkpoint only once the previous one is covered
//! by a commit).
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

use std::collections::BTreeMap;

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

/// Slots per partition (see the module doc).
pub const SLOTS: u8 = 2;

/// The record key of piece `index` of the checkpoint in `slot` of `partition`.
pub fn piece_key(partition: i32, slot: u8, index: u32) -> Vec<u8> {
    format!("p{partition}/s{slot}/{index}").into_bytes()
}

/// `(partition, slot, index)` of a key written by [`piece_key`].
pub fn parse_key(key: &[u8]) -> Option<(i32, u8, u32)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.split('/');
    let partition = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let slot: u8 = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    (parts.next().is_none() && slot < SLOTS).then_some((partition, slot, index))
}

/// A record of the checkpoints topic: key, and value (`None`: a tombstone).
pub type StoredRecord = (Vec<u8>, Option<Vec<u8>>);

/// The checkpoint found in one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub slot: u8,
    /// What the recovery decision reads; `unreadable` when pieces are missing, mixed or corrupt.
    pub facts: CheckpointFacts,
    /// Its pieces (whole and consistent when readable), for [`join`].
    pub pieces: Vec<Vec<u8>>,
    /// Every key of this slot holding a record now (to delete the checkpoint: tombstones).
    pub keys: Vec<Vec<u8>>,
}

/// What a checkpoint partition holds for `partition`: from its records in log order (key,
/// value; `None` is a tombstone), the latest value of each key, grouped by slot. A slot's
/// checkpoint is the one its piece 0 belongs to; it is readable if every piece of it is there
/// (pieces left from an older, longer checkpoint of the slot are ignored). Sorted by when the
/// slot's piece 0 was written, oldest first (the order [`crate::recovery::choose_checkpoint`]
/// breaks ties by).
pub fn gather(partition: i32, records: &[StoredRecord]) -> Vec<Found> {
    // (slot, piece) -> position in the log of its latest record
    let mut latest: BTreeMap<(u8, u32), usize> = BTreeMap::new();
    for (at, (key, _)) in records.iter().enumerate() {
        if let Some((p, slot, index)) = parse_key(key) {
            if p == partition {
                latest.insert((slot, index), at);
            }
        }
    }
    let mut found = Vec::new();
    for slot in 0..SLOTS {
        let entries: Vec<_> = latest
            .range((slot, 0)..=(slot, u32::MAX))
            .filter_map(|((_, index), at)| {
                let (key, value) = &records[*at];
                value.as_ref().map(|v| (*index, *at, key.clone(), v))
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let keys = entries.iter().map(|(_, _, k, _)| k.clone()).collect();
        let first = entries.iter().find(|(index, ..)| *index == 0);
        let header = first.and_then(|(_, _, _, v)| read_header(v).ok());
        let written = first.map_or(usize::MAX, |(_, at, ..)| *at);
        let (facts, pieces) = match header {
            Some(h) => {
                let same = |v: &[u8]| {
                    read_header(v).is_ok_and(|o| {
                        (o.meta, o.count, o.total_len, o.checksum)
                            == (h.meta, h.count, h.total_len, h.checksum)
                    })
                };
                let pieces: Vec<Vec<u8>> = entries
                    .iter()
                    .filter(|(index, _, _, v)| *index < h.count && same(v))
                    .map(|(_, _, _, v)| v.to_vec())
                    .collect();
                let complete = pieces.len() == h.count as usize && h.meta.partition == partition;
                let facts = CheckpointFacts {
                    unreadable: !complete,
                    ..h.meta.facts()
                };
                (facts, pieces)
            }
            None => (
                CheckpointFacts {
                    offset: -1,
                    state_version: 0,
                    clock_watermark: None,
                    unreadable: true,
                },
                Vec::new(),
            ),
        };
        found.push((
            written,
            Found {
                slot,
                facts,
                pieces,
                keys,
            },
        ));
    }
    found.sort_by_key(|(written, f)| (*written, f.slot));
    found.into_iter().map(|(_, f)| f).collect()
}

/// A checkpoint due by time is not started sooner than this many times what the previous one
/// cost after it (copying and serializing the state): checkpoints take at most about 1/20 of the
/// time, and so of the cores the rules and the other stages share. A partition with a big state
/// (38 MB after 80 s at 2,000 events/s in the pipeline benchmark) checkpointing every 10 s
/// stalled the stages beside it (gateway p99 0.8 s at that rate, 75 ms with checkpoints off).
/// The record bound and [`REPLAY_BUDGET`] still apply: what a crash leaves to replay stays
/// bounded (a recovery at 1 M events of history with the cost spacing alone took 10 s to its
/// first output, replaying the end of the catch-up that the last checkpoint had missed).
pub const COST_FACTOR: u32 = 20;

/// A checkpoint is due, whatever its cost, once the records since the last one took this long
/// to process: a restore replays them (without producing, so in at most that long) before its
/// first new output, and recovery should take seconds.
pub const REPLAY_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// When the runner writes a partition's next checkpoint, and in which slot: at most
/// `interval` after the previous one (but not sooner than [`COST_FACTOR`] times the previous
/// one's cost), or after `max_records` records or [`REPLAY_BUDGET`] of processing, whichever
/// comes first — only if records were
/// processed since, and only once the previous checkpoint is covered by a
/// commit (so the slot not being overwritten holds one at or before the committed offset).
/// Times are the caller's (a monotonic clock; tests pass made-up instants).
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: std::time::Duration,
    max_records: u64,
    /// What the last checkpoint cost to copy and serialize ([`Schedule::cost`]).
    last_cost: std::time::Duration,
    /// What processing the records since the last checkpoint took ([`Schedule::processed`]).
    busy: std::time::Duration,
    /// Position of the engine when the last checkpoint was taken (or the partition assigned).
    last_offset: i64,
    last_at: std::time::Instant,
    /// The offset of the newest checkpoint this partition has (written or loaded), if any.
    previous: Option<i64>,
    slot: u8,
    /// Due at once, whatever the spacing (see [`Schedule::caught_up`]).
    urgent: bool,
}

impl Schedule {
    /// A partition assigned at `now`, its engine at `start`: restored from a checkpoint in
    /// `loaded_slot` (at `start`), or not.
    pub fn new(
        interval: std::time::Duration,
        max_records: u64,
        start: i64,
        now: std::time::Instant,
        loaded_slot: Option<u8>,
    ) -> Self {
        Schedule {
            interval,
            max_records,
            last_cost: std::time::Duration::ZERO,
            busy: std::time::Duration::ZERO,
            last_offset: start,
            last_at: now,
            previous: loaded_slot.map(|_| start),
            // Never overwrite the checkpoint just loaded: it may be the only usable one.
            slot: loaded_slot.map_or(0, |s| (s + 1) % SLOTS),
            urgent: false,
        }
    }

    /// The slot to write a checkpoint of the engine at `next_offset` into now, if one is due.
    /// `committed`: the offset known committed.
    pub fn due(
        &self,
        now: std::time::Instant,
        next_offset: i64,
        committed: Option<i64>,
    ) -> Option<u8> {
        let records = next_offset.saturating_sub(self.last_offset);
        if records <= 0 {
            return None;
        }
        // The record and replay bounds are what a crash leaves to replay: they win over the
        // cost spacing.
        if !self.urgent && (records as u64) < self.max_records && self.busy < REPLAY_BUDGET {
            let since = now.saturating_duration_since(self.last_at);
            if since < self.interval || since < self.last_cost * COST_FACTOR {
                return None;
            }
        }
        let covered = self
            .previous
            .is_none_or(|prev| committed.is_some_and(|c| c >= prev));
        covered.then_some(self.slot)
    }

    /// The last checkpoint took `took` to copy and serialize: the next waits at least
    /// [`COST_FACTOR`] times that after it.
    pub fn cost(&mut self, took: std::time::Duration) {
        self.last_cost = took;
    }

    /// A record was processed in `took`.
    pub fn processed(&mut self, took: std::time::Duration) {
        self.busy += took;
    }

    /// The partition caught up with its log. If what it processed since the last checkpoint
    /// took a sizeable share of [`REPLAY_BUDGET`] (the end of a catch-up), the next checkpoint
    /// is due at once: a crash now would replay all of it before its first output, while live
    /// traffic adds little. After a short replay (a restore) nothing changes: copying the state
    /// right then would only delay the first outputs.
    pub fn caught_up(&mut self) {
        if self.busy >= REPLAY_BUDGET / 4 {
            self.urgent = true;
        }
    }

    /// A checkpoint of the engine at `offset` was written (started) at `now`.
    pub fn written(&mut self, offset: i64, now: std::time::Instant) {
        self.urgent = false;
        self.busy = std::time::Duration::ZERO;
        self.last_offset = offset;
        self.last_at = now;
        self.previous = Some(offset);
        self.slot = (self.slot + 1) % SLOTS;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

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

    fn stored(partition: i32, slot: u8, pieces: &[Vec<u8>]) -> Vec<StoredRecord> {
        pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (piece_key(partition, slot, i as u32), Some(p.clone())))
            .collect()
    }

    fn at(offset: i64) -> CheckpointMeta {
        CheckpointMeta { offset, ..meta() }
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        assert_eq!(parse_key(&piece_key(12, 1, 7)), Some((12, 1, 7)));
        assert_eq!(piece_key(3, 0, 0), b"p3/s0/0");
        for bad in [&b"p3/s2/0"[..], b"p3/s0", b"x3/s0/1", b"p3/s0/1/2", b"\xff"] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_latest_value_of_each_key_makes_each_slots_checkpoint() {
        let old = split(at(100), &snapshot(250), HEADER_LEN + 100).unwrap();
        let new = split(at(200), &snapshot(150), HEADER_LEN + 100).unwrap();
        let other = split(at(300), &snapshot(150), HEADER_LEN + 100).unwrap();
        let mut log = stored(3, 0, &old); // 3 pieces in slot 0
        log.extend(stored(3, 1, &new)); // slot 1
        log.extend(stored(4, 0, &other)); // another partition
        let found = gather(3, &log);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].slot, found[0].facts.offset), (0, 100));
        assert_eq!((found[1].slot, found[1].facts.offset), (1, 200));
        assert!(found.iter().all(|f| !f.facts.unreadable));
        assert_eq!(join(&found[0].pieces).unwrap().1, snapshot(250));

        // Slot 0 rewritten with a 2-piece checkpoint: its old piece 2 stays but is ignored.
        let newer = split(at(400), &snapshot(150), HEADER_LEN + 100).unwrap();
        log.extend(stored(3, 0, &newer));
        let found = gather(3, &log);
        assert_eq!((found[1].slot, found[1].facts.offset), (0, 400));
        assert!(!found[1].facts.unreadable);
        assert_eq!(found[1].pieces.len(), 2);
        assert_eq!(found[1].keys.len(), 3);
        assert_eq!(join(&found[1].pieces).unwrap().0, at(400));

        // A crash after the first piece of the next write of slot 1: mixed, unreadable.
        let torn = split(at(500), &snapshot(150), HEADER_LEN + 100).unwrap();
        log.push((piece_key(3, 1, 0), Some(torn[0].clone())));
        let found = gather(3, &log);
        let slot1 = found.iter().find(|f| f.slot == 1).unwrap();
        assert!(slot1.facts.unreadable);
        assert_eq!(slot1.facts.offset, 500);
        assert!(!found.iter().find(|f| f.slot == 0).unwrap().facts.unreadable);

        // Tombstones delete; a corrupt piece 0 makes the slot unreadable.
        log.extend((0..3).map(|i| (piece_key(3, 1, i), None)));
        log.push((piece_key(3, 0, 0), Some(b"garbage".to_vec())));
        let found = gather(3, &log);
        assert_eq!(found.len(), 1);
        assert!(found[0].facts.unreadable);
        assert_eq!(found[0].slot, 0);
    }

    #[test]
    fn the_schedule_is_time_and_size_bounded_and_waits_for_a_commit() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut sched = Schedule::new(Duration::from_secs(10), 1000, 50, t0, None);
        // Nothing processed: never due.
        assert_eq!(sched.due(s(60), 50, Some(50)), None);
        // Some records, not yet the interval.
        assert_eq!(sched.due(s(9), 60, None), None);
        // The interval passed: due in slot 0, with nothing written before (no commit needed).
        assert_eq!(sched.due(s(10), 60, None), Some(0));
        sched.written(60, s(10));
        // Next: due by size before the interval, in the other slot, once 60 is committed.
        assert_eq!(sched.due(s(11), 1060, Some(59)), None);
        assert_eq!(sched.due(s(11), 1059, Some(60)), None);
        assert_eq!(sched.due(s(11), 1060, Some(60)), Some(1));
        sched.written(1060, s(11));
        assert_eq!(sched.due(s(30), 1100, Some(1060)), Some(0));

        // Restored from slot 1: the first write goes to slot 0, and waits for the loaded
        // checkpoint to be covered (it is, by construction: at or before the committed offset).
        let sched = Schedule::new(Duration::from_secs(10), 1000, 70, t0, Some(1));
        assert_eq!(sched.due(s(10), 80, Some(70)), Some(0));
        assert_eq!(sched.due(s(10), 80, None), None);
    }

    #[test]
    fn a_costly_checkpoint_spaces_the_next_by_twenty_times_its_cost() {
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sched = Schedule::new(Duration::from_secs(10), 1000, 0, t0, None);
        sched.written(10, t0);
        sched.cost(Duration::from_millis(800));
        // The interval does not bring it before 20 x 800 ms...
        assert_eq!(sched.due(ms(10_000), 20, Some(10)), None);
        assert_eq!(sched.due(ms(15_999), 1_009, Some(10)), None);
        assert_eq!(sched.due(ms(16_000), 1_009, Some(10)), Some(1));
        // ...the record bound does: what a crash would replay stays bounded.
        assert_eq!(sched.due(ms(1_000), 1_010, Some(10)), Some(1));
        // ...and so does the replay budget.
        let mut busy = sched.clone();
        busy.processed(REPLAY_BUDGET - Duration::from_millis(1));
        assert_eq!(busy.due(ms(1_000), 20, Some(10)), None);
        busy.processed(Duration::from_millis(1));
        assert_eq!(busy.due(ms(1_000), 20, Some(10)), Some(1));
        // A cheap one: back to the interval.
        sched.written(1_010, ms(16_000));
        sched.cost(Duration::from_millis(5));
        assert_eq!(sched.due(ms(25_999), 1_020, Some(1_010)), None);
        assert_eq!(sched.due(ms(26_000), 1_020, Some(1_010)), Some(0));
    }

    #[test]
    fn catching_up_after_a_long_replay_makes_the_next_checkpoint_due_at_once() {
        let t0 = Instant::now();
        let ms = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sched = Schedule::new(Duration::from_secs(10), 100_000, 0, t0, None);
        sched.written(10, t0);
        sched.cost(Duration::from_millis(800));
        // A short replay (a restore) catching up changes nothing.
        sched.processed(REPLAY_BUDGET / 4 - Duration::from_millis(1));
        sched.caught_up();
        assert_eq!(sched.due(ms(1_000), 500, Some(10)), None);
        // The end of a catch-up: due at once, despite the interval and the cost spacing...
        sched.processed(Duration::from_millis(1));
        sched.caught_up();
        assert_eq!(sched.due(ms(1_000), 500, Some(10)), Some(1));
        // ...but still only once the previous checkpoint is covered by a commit.
        assert_eq!(sched.due(ms(1_000), 500, Some(9)), None);
        // Written: back to the spacing.
        sched.written(500, ms(1_000));
        sched.caught_up();
        assert_eq!(sched.due(ms(2_000), 600, Some(500)), None);
    }
}

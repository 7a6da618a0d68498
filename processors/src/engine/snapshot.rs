//! A [`PartitionEngine`]'s state as bytes, for checkpoints: [`PartitionEngine::snapshot`] and
//! [`PartitionEngine::restore`]. Restoring a snapshot and feeding the rest of the stream gives
//! the same outputs, byte for byte, as never having stopped.
//!
//! What it does not: split bytes into Kafka records ([`crate::checkpoint`]), decide which
//! snapshot to load ([`crate::recovery`]), or migrate between state versions — a snapshot of
//! another [`STATE_VERSION`] or taken under another configuration is refused, and the caller
//! falls back to a full replay (never a guess at what the state would have been).
//!
//! The format is JSON: already a dependency, readable when debugging a checkpoint, and stable
//! for a given state version. Maps whose keys are not strings are written as lists of pairs.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use vigia_schemas::TenantId;

use super::{EngineStats, PartitionEngine, TenantState};
use crate::config::Config;

/// Version of the engine state's format. Bump it with any change to a state structure (a field
/// added, removed or re-meant): older snapshots are then refused, not misread.
pub const STATE_VERSION: u32 = 1;

/// Why a snapshot cannot be restored (the caller replays instead).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("engine snapshot of state version {found}; this build reads version {STATE_VERSION}")]
    Version { found: u32 },
    #[error("engine snapshot taken under another processors configuration")]
    Config,
    #[error("engine snapshot unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

#[derive(serde::Serialize)]
struct SnapshotRef<'a> {
    state_version: u32,
    /// The configuration the state was built under ([`Config::for_state`]): thresholds and
    /// limits shape the state, so a state built under others would not be the one a replay
    /// builds. Settings that do not shape it (tick, commit and checkpoint timings) are left out.
    config: &'a Config,
    tenants: &'a BTreeMap<TenantId, TenantState>,
    clock_watermark: Option<DateTime<Utc>>,
    stats: EngineStats,
}

#[derive(serde::Deserialize)]
struct Version {
    state_version: u32,
}

#[derive(serde::Deserialize)]
struct Snapshot {
    config: Config,
    tenants: BTreeMap<TenantId, TenantState>,
    clock_watermark: Option<DateTime<Utc>>,
    stats: EngineStats,
}

impl PartitionEngine {
    /// The engine's whole state (with [`STATE_VERSION`] and its configuration).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&SnapshotRef {
            state_version: STATE_VERSION,
            config: &self.config.for_state(),
            tenants: &self.tenants,
            clock_watermark: self.clock_watermark,
            stats: self.stats,
        })
        .expect("engine state serializes")
    }

    /// The engine a [`Self::snapshot`] was taken of, if it was taken by this state version under
    /// `config`.
    pub fn restore(config: Arc<Config>, bytes: &[u8]) -> Result<Self, SnapshotError> {
        // The version first: a snapshot of another version may not even decode.
        let state_version = match leading_version(bytes) {
            Some(v) => v,
            None => serde_json::from_slice::<Version>(bytes)?.state_version,
        };
        if state_version != STATE_VERSION {
            return Err(SnapshotError::Version {
                found: state_version,
            });
        }
        let s: Snapshot = serde_json::from_slice(bytes)?;
        if s.config != config.for_state() {
            return Err(SnapshotError::Config);
        }
        Ok(PartitionEngine {
            config,
            tenants: s.tenants,
            clock_watermark: s.clock_watermark,
            stats: s.stats,
            due_from: None,
        })
    }
}

/// The state version of a snapshot as [`PartitionEngine::snapshot`] writes it (its first field),
/// read from the first bytes: decoding the whole snapshot just for it would read a checkpoint of
/// a hundred megabytes twice. `None` for anything else (then the whole text is decoded).
fn leading_version(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.strip_prefix(br#"{"state_version":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// A map as a list of `(key, value)` pairs: JSON keys must be strings.
pub(crate) mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// A time zone by its IANA name.
pub(crate) mod tz {
    use chrono_tz::Tz;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|_| D::Error::custom(format!("unknown time zone {name}")))
    }
}

/// Buying-signal names, restored as the `'static` names the scoring knows.
pub(crate) mod signal_set {
    use std::collections::BTreeSet;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(set: &BTreeSet<&'static str>, s: S) -> Result<S::Ok, S::Error> {
        set.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeSet<&'static str>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|name| {
                crate::scoring::signal_names()
                    .find(|known| *known == name)
                    .ok_or_else(|| D::Error::custom(format!("unknown buying signal {name}")))
            })
            .collect()
    }
}

/// Alert counts by notification type, restored as the types' `'static` names.
pub(crate) mod alert_counts {
    use std::collections::BTreeMap;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};
    use vigia_schemas::NotificationType;

    pub fn serialize<S: Serializer>(
        counts: &BTreeMap<&'static str, u32>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        counts.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<&'static str, u32>, D::Error> {
        BTreeMap::<String, u32>::deserialize(d)?
            .into_iter()
            .map(|(name, n)| {
                let kind: NotificationType = serde_json::from_value(serde_json::Value::String(
                    name.clone(),
                ))
                .map_err(|_| D::Error::custom(format!("unknown notification type {name}")))?;
                if kind.as_str() != name {
                    return Err(D::Error::custom(format!(
                        "unknown notification type {name}"
                    )));
                }
                Ok((kind.as_str(), n))
            })
            .collect()
    }
}

use uuid::Uuid;

/// Namespace of every id Vigía derives (UUID v5 of "vigia.dev").
const VIGIA_NAMESPACE: Uuid = Uuid::from_bytes([
    0x6f, 0x1b, 0x3c, 0x52, 0x8a, 0x4e, 0x5d, 0x1f, 0x9b, 0x27, 0x3e, 0x44, 0x0c, 0x81, 0xa9, 0x5d,
]);

/// A deterministic id for an output, from what caused it: the same cause always gives the same id,
/// so a replayed or duplicated output is recognisable downstream (inbox, ClickHouse).
///
/// `kind` names the output family ("notification/unanswered", "response_time", …); `parts` are
/// the cause's identity (event ids, tenant, entity ids). Parts are length-prefixed so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn derive_id(kind: &str, parts: &[&str]) -> Uuid {
    let mut name = Vec::with_capacity(64);
    for p in std::iter::once(&kind).chain(parts.iter()) {
        name.extend_from_slice(&(p.len() as u32).to_be_bytes());
        name.extend_from_slice(p.as_bytes());
    }
    Uuid::new_v5(&VIGIA_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_cause_same_id_and_parts_are_not_ambiguous() {
        assert_eq!(derive_id("k", &["a", "b"]), derive_id("k", &["a", "b"]));
        assert_ne!(derive_id("k", &["ab", ""]), derive_id("k", &["a", "b"]));
        assert_ne!(derive_id("k1", &["a"]), derive_id("k2", &["a"]));
    }
}

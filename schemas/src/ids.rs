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
    let fields = || std::iter::once(&kind).chain(parts.iter());
    let len: usize = fields().map(|p| 4 + p.len()).sum();
    // Most names (a kind, a tenant, an entity id, an event id or two) fit on the stack: an id is
    // derived for every output, and a heap buffer cost as much as a third of the hash.
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let name: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for p in fields() {
        name[at..at + 4].copy_from_slice(&(p.len() as u32).to_be_bytes());
        name[at + 4..at + 4 + p.len()].copy_from_slice(p.as_bytes());
        at += 4 + p.len();
    }
    Uuid::new_v5(&VIGIA_NAMESPACE, name)
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

    /// The name hashed, as the first version built it: each part's length (u32, big endian)
    /// then its bytes.
    fn reference(kind: &str, parts: &[&str]) -> Uuid {
        let mut name = Vec::new();
        for p in std::iter::once(&kind).chain(parts.iter()) {
            name.extend_from_slice(&(p.len() as u32).to_be_bytes());
            name.extend_from_slice(p.as_bytes());
        }
        Uuid::new_v5(&VIGIA_NAMESPACE, &name)
    }

    #[test]
    fn ids_are_those_of_the_length_prefixed_name_on_the_stack_or_not() {
        let long = "x".repeat(300);
        let edge = "y".repeat(256 - 4 - 4 - 1);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("k", vec![]),
            ("", vec![""]),
            (
                "notification/unanswered",
                vec!["1", "conv-7", "0e0c5c4e-1f7a-4f55-9d1b-2b8f7a3c9e10"],
            ),
            ("seller_metrics", vec!["1", "42", "1772438400000"]),
            ("k", vec![&edge]),
            ("kk", vec![&edge]),
            ("k", vec![&long]),
            ("k", vec!["ü", &long, "z"]),
        ];
        for (kind, parts) in cases {
            assert_eq!(
                derive_id(kind, &parts),
                reference(kind, &parts),
                "{kind} {parts:?}"
            );
        }
    }
}

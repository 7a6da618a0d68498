use sha1::{Digest, Sha1};
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
    // UUID v5 is SHA-1 over the namespace then the name; the name (each field's length, u32
    // big endian, then its bytes) is fed to the hash piece by piece, never assembled. RustCrypto's
    // `sha1` uses the CPU's SHA instructions where it has them (x86 SHA-NI, ARMv8 SHA): an id is
    // derived for every output and the software rounds were ~8 % of the processors' work.
    let mut sha = Sha1::new();
    sha.update(VIGIA_NAMESPACE.as_bytes());
    for p in std::iter::once(&kind).chain(parts.iter()) {
        sha.update((p.len() as u32).to_be_bytes());
        sha.update(p.as_bytes());
    }
    let digest = sha.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
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
    fn ids_are_the_uuid_v5_of_the_length_prefixed_name_short_or_long() {
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

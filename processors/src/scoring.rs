//! The hot-lead score (contract §3.3), as a pure function of plain inputs.
//!
//! Nothing here knows about Kafka, the engine's state or Vigía's event types, so the same code can
//! be exported as a UDF (e.g. to Arroyo) or called from SQL tooling. Weights:
//!
//! | component  | rule | weight |
//! |---|---|---|
//! | source     | `META_ADS` / `REFERRAL` / `WEBSITE` / anything else | .30 / .25 / .20 / 0 |
//! | engagement | more than 5 customer messages | .20 |
//! | recency    | last customer message at most 1 h before the evaluation time (or after it) | .15 |
//! | intent     | .10 per distinct buying signal in the customer's messages, at most .25 | ≤ .25 |
//! | location   | the lead's location is one of the tenant's high-value areas | .10 |
//!
//! The sum is clamped to [0, 1] and rounded to 6 decimals so that threshold comparisons do not
//! depend on floating-point noise (.30 + .25 + .15 + .10 is exactly 0.8).
//!
//! Buying signals ([`intent_signals`]) are concepts, each recognised by Spanish and English words
//! or phrases, matched on whole words after lower-casing and removing accents ("Cuánto" =
//! "cuanto"): `price` (precio, cuánto, cuesta, price, how much, cost…), `quote` (cotización,
//! presupuesto, quote…), `buy` (comprar, buy, purchase…), `availability` (disponible, stock,
//! available…), `financing` (financiación, crédito, cuotas, financing…), `visit` (visita, cita,
//! agendar, appointment…), `discount` (descuento, oferta, promoción, discount…). Repeating one
//! signal does not add to it; combining several does.

use chrono::{DateTime, Utc};

/// What the score is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreInputs<'a> {
    /// The lead's source as the CRM names it: `META_ADS`, `REFERRAL`, `WEBSITE`, `WHATSAPP`,
    /// `OTHER` (or empty when unknown).
    pub source: &'a str,
    /// Messages the customer sent in the lead's conversation.
    pub customer_messages: u32,
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// The time the score is for (the event time of what caused the recomputation).
    pub evaluated_at: DateTime<Utc>,
    /// Distinct buying signals found in the customer's messages (see [`intent_signals`]).
    pub intent_signals: u32,
    pub location: Option<&'a str>,
    pub high_value_locations: &'a [String],
}

/// The score and its components (each already weighted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBreakdown {
    pub score: f64,
    pub source: f64,
    pub engagement: f64,
    pub recency: f64,
    pub intent: f64,
    pub location: f64,
}

pub const ENGAGEMENT_MIN_MESSAGES: u32 = 6;
pub const ENGAGEMENT_WEIGHT: f64 = 0.20;
pub const RECENCY_WINDOW_SECONDS: i64 = 3600;
pub const RECENCY_WEIGHT: f64 = 0.15;
pub const INTENT_PER_SIGNAL: f64 = 0.10;
pub const INTENT_MAX: f64 = 0.25;
pub const LOCATION_WEIGHT: f64 = 0.10;

/// The weight of a lead source.
pub fn source_weight(source: &str) -> f64 {
    match source.trim().to_ascii_uppercase().as_str() {
        "META_ADS" => 0.30,
        "REFERRAL" => 0.25,
        "WEBSITE" => 0.20,
        _ => 0.0,
    }
}

/// The hot-lead score of one lead.
pub fn score(i: &ScoreInputs<'_>) -> ScoreBreakdown {
    let source = source_weight(i.source);
    let engagement = if i.customer_messages >= ENGAGEMENT_MIN_MESSAGES {
        ENGAGEMENT_WEIGHT
    } else {
        0.0
    };
    let recency = match i.last_customer_message_at {
        Some(last) if (i.evaluated_at - last).num_seconds() <= RECENCY_WINDOW_SECONDS => {
            RECENCY_WEIGHT
        }
        _ => 0.0,
    };
    let intent = (f64::from(i.intent_signals) * INTENT_PER_SIGNAL).min(INTENT_MAX);
    let location = match i.location {
        Some(loc) if is_high_value(loc, i.high_value_locations) => LOCATION_WEIGHT,
        _ => 0.0,
    };
    let total = (source + engagement + recency + intent + location).clamp(0.0, 1.0);
    ScoreBreakdown {
        score: round6(total),
        source: round6(source),
        engagement: round6(engagement),
        recency: round6(recency),
        intent: round6(intent),
        location: round6(location),
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Whether `location` is in `areas`, ignoring case, accents and surrounding blanks.
pub fn is_high_value(location: &str, areas: &[String]) -> bool {
    let loc = normalize(location);
    let loc = loc.trim();
    !loc.is_empty() && areas.iter().any(|a| normalize(a).trim() == loc)
}

/// Buying-signal concepts and the (normalised) words or phrases that express them.
const SIGNALS: &[(&str, &[&str])] = &[
    (
        "price",
        &[
            "precio", "precios", "cuanto", "cuesta", "cuestan", "costo", "costos", "tarifa",
            "price", "prices", "pricing", "how much", "cost", "costs", "rate",
        ],
    ),
    (
        "quote",
        &[
            "cotizacion",
            "cotizaciones",
            "cotizar",
            "presupuesto",
            "quote",
            "quotation",
            "estimate",
        ],
    ),
    (
        "buy",
        &[
            "comprar", "compro", "compra", "adquirir", "reservar", "buy", "purchase", "book it",
        ],
    ),
    (
        "availability",
        &[
            "disponible",
            "disponibles",
            "disponibilidad",
            "stock",
            "available",
            "availability",
        ],
    ),
    (
        "financing",
        &[
            "financiacion",
            "financiamiento",
            "financiar",
            "credito",
            "cuotas",
            "financing",
            "installments",
            "credit",
        ],
    ),
    (
        "visit",
        &[
            "visita",
            "visitar",
            "cita",
            "agendar",
            "visit",
            "appointment",
            "schedule a",
        ],
    ),
    (
        "discount",
        &[
            "descuento",
            "descuentos",
            "oferta",
            "promocion",
            "discount",
            "offer",
            "deal",
        ],
    ),
];

/// The names of every buying signal, in a fixed order.
pub fn signal_names() -> impl Iterator<Item = &'static str> {
    SIGNALS.iter().map(|(name, _)| *name)
}

/// The distinct buying signals (`"price"`, `"quote"`, …) a customer message expresses, in a fixed
/// order. See the module documentation for the vocabulary.
pub fn intent_signals(text: &str) -> Vec<&'static str> {
    let normalized = normalize(text);
    let words: Vec<&str> = normalized
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for (name, phrases) in SIGNALS {
        let hit = phrases.iter().any(|p| {
            let needle: Vec<&str> = p.split(' ').collect();
            words.windows(needle.len()).any(|w| w == needle.as_slice())
        });
        if hit {
            found.push(*name);
        }
    }
    found
}

/// Lower case without accents, so "Cotización" matches "cotizacion" and "BOGOTÁ" matches "Bogota".
fn normalize(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'ä' | 'â' | 'ã' => 'a',
            'é' | 'è' | 'ë' | 'ê' => 'e',
            'í' | 'ì' | 'ï' | 'î' => 'i',
            'ó' | 'ò' | 'ö' | 'ô' | 'õ' => 'o',
            'ú' | 'ù' | 'ü' | 'û' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn base<'a>(areas: &'a [String]) -> ScoreInputs<'a> {
        ScoreInputs {
            source: "OTHER",
            customer_messages: 0,
            last_customer_message_at: None,
            evaluated_at: t("2026-03-01T12:00:00Z"),
            intent_signals: 0,
            location: None,
            high_value_locations: areas,
        }
    }

    #[test]
    fn source_weights() {
        let areas = [];
        for (src, w) in [
            ("META_ADS", 0.30),
            ("REFERRAL", 0.25),
            ("WEBSITE", 0.20),
            ("WHATSAPP", 0.0),
            ("OTHER", 0.0),
            ("", 0.0),
        ] {
            let b = score(&ScoreInputs {
                source: src,
                ..base(&areas)
            });
            assert_eq!((b.source, b.score), (w, w), "{src}");
        }
    }

    #[test]
    fn engagement_needs_more_than_five_customer_messages() {
        let areas = [];
        let with = |n| {
            score(&ScoreInputs {
                customer_messages: n,
                ..base(&areas)
            })
            .engagement
        };
        assert_eq!(with(5), 0.0);
        assert_eq!(with(6), 0.20);
        assert_eq!(with(40), 0.20);
    }

    #[test]
    fn recency_is_the_last_hour_inclusive() {
        let areas = [];
        let with = |last: Option<&str>| {
            score(&ScoreInputs {
                last_customer_message_at: last.map(t),
                ..base(&areas)
            })
            .recency
        };
        assert_eq!(with(None), 0.0);
        assert_eq!(with(Some("2026-03-01T11:00:00Z")), 0.15);
        assert_eq!(with(Some("2026-03-01T10:59:59Z")), 0.0);
        assert_eq!(with(Some("2026-03-01T11:59:00Z")), 0.15);
        // A message after the evaluation time (a late cause event) still counts as recent.
        assert_eq!(with(Some("2026-03-01T12:30:00Z")), 0.15);
    }

    #[test]
    fn intent_is_ten_points_per_signal_capped_at_25() {
        let areas = [];
        let with = |n| {
            score(&ScoreInputs {
                intent_signals: n,
                ..base(&areas)
            })
            .intent
        };
        assert_eq!(with(0), 0.0);
        assert_eq!(with(1), 0.10);
        assert_eq!(with(2), 0.20);
        assert_eq!(with(3), 0.25);
        assert_eq!(with(7), 0.25);
    }

    #[test]
    fn location_ignores_case_accents_and_blanks() {
        let areas = vec!["Bogotá".to_string(), "Medellín".to_string()];
        let with = |loc: Option<&str>| {
            score(&ScoreInputs {
                location: loc,
                ..base(&areas)
            })
            .location
        };
        assert_eq!(with(Some(" BOGOTA ")), 0.10);
        assert_eq!(with(Some("medellin")), 0.10);
        assert_eq!(with(Some("Cali")), 0.0);
        assert_eq!(with(Some("")), 0.0);
        assert_eq!(with(None), 0.0);
    }

    #[test]
    fn everything_sums_to_one_and_thresholds_are_exact() {
        let areas = vec!["Lima".to_string()];
        let all = score(&ScoreInputs {
            source: "META_ADS",
            customer_messages: 9,
            last_customer_message_at: Some(t("2026-03-01T11:30:00Z")),
            evaluated_at: t("2026-03-01T12:00:00Z"),
            intent_signals: 4,
            location: Some("lima"),
            high_value_locations: &areas,
        });
        assert_eq!(all.score, 1.0);
        let some = score(&ScoreInputs {
            source: "META_ADS",
            customer_messages: 1,
            last_customer_message_at: Some(t("2026-03-01T11:30:00Z")),
            intent_signals: 1,
            location: Some("Lima"),
            ..base(&areas)
        });
        // .30 + 0 (one message) + .15 + .10 + .10
        assert_eq!(some.score, 0.65);
        let exact = score(&ScoreInputs {
            source: "META_ADS",
            customer_messages: 6,
            intent_signals: 3,
            location: Some("Lima"),
            ..base(&areas)
        });
        // .30 + .20 + .25 + .10 + .0 recency
        assert_eq!(exact.score, 0.85);
        let point_eight = score(&ScoreInputs {
            source: "REFERRAL",
            customer_messages: 6,
            last_customer_message_at: Some(t("2026-03-01T11:59:00Z")),
            intent_signals: 2,
            ..base(&areas)
        });
        assert_eq!(point_eight.score, 0.8);
        assert!(point_eight.score >= 0.8);
    }

    #[test]
    fn signals_in_spanish_and_english() {
        assert_eq!(
            intent_signals("Hola, ¿Cuánto cuesta? ¿Está DISPONIBLE?"),
            vec!["price", "availability"]
        );
        assert_eq!(
            intent_signals("Necesito una cotización y quiero comprar con crédito"),
            vec!["quote", "buy", "financing"]
        );
        assert_eq!(
            intent_signals("How much is it? I want to buy, is it available?"),
            vec!["price", "buy", "availability"]
        );
        assert_eq!(intent_signals("precio precio precio price"), vec!["price"]);
        // Whole words only: "precious" is not "precio", "costume" is not "cost".
        assert!(intent_signals("what a precious costume").is_empty());
        assert!(intent_signals("hola, buenas tardes").is_empty());
        assert_eq!(
            intent_signals("can we schedule a visit? any discount?"),
            vec!["visit", "discount"]
        );
    }
}

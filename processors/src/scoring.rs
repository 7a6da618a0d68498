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
    let source = source.trim();
    // Upper-casing ASCII then comparing with an upper-case ASCII name, without the copy.
    if source.eq_ignore_ascii_case("META_ADS") {
        0.30
    } else if source.eq_ignore_ascii_case("REFERRAL") {
        0.25
    } else if source.eq_ignore_ascii_case("WEBSITE") {
        0.20
    } else {
        0.0
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
    // Trimming before normalising is trimming after: lower-casing and removing accents never
    // turn a blank into a letter or back, and never make a character vanish. Comparing the
    // normalised characters as they come avoids a copy of each area for every score.
    let loc = location.trim();
    !loc.is_empty()
        && areas
            .iter()
            .any(|a| normalized_chars(a.trim()).eq(normalized_chars(loc)))
}

/// The characters of [`normalize`]`(s)`, as they come.
fn normalized_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase).map(fold_accent)
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
    signals_in(intent_signal_mask(text)).collect()
}

/// The names of the signals in a bit set of [`intent_signal_mask`], in a fixed order.
pub fn signals_in(mask: u8) -> impl Iterator<Item = &'static str> {
    SIGNALS
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, (name, _))| *name)
}

/// [`intent_signals`] as a bit set: bit `i` is the `i`-th signal of [`signal_names`].
///
/// One pass over the text, without allocating (it runs on every customer message: the list of
/// words and the lower-cased copy it replaces were a quarter of the processors' instructions).
/// It sees the same words as [`normalize`] followed by a split on non-alphanumeric characters:
/// each character is lower-cased and stripped of its accent as there, and a word is a maximal
/// run of alphanumeric characters of that result. A word that is not ASCII or is longer than
/// every vocabulary word cannot match one, so only its presence (it separates phrase words) is
/// kept.
pub fn intent_signal_mask(text: &str) -> u8 {
    let mut scan = WordScan::default();
    for c in text.chars() {
        if c.is_ascii() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                scan.push(c as u8);
            } else {
                scan.end_word();
            }
        } else {
            for lower in c.to_lowercase() {
                let folded = fold_accent(lower);
                if folded.is_ascii() {
                    if folded.is_ascii_alphanumeric() {
                        scan.push(folded as u8);
                    } else {
                        scan.end_word();
                    }
                } else if folded.is_alphanumeric() {
                    scan.push_other();
                } else {
                    scan.end_word();
                }
            }
        }
    }
    scan.end_word();
    scan.found
}

/// The longest vocabulary word, in bytes (`disponibilidad`, `financiamiento`).
const LONGEST_WORD: usize = 14;

/// The words of the vocabulary's phrases that are not signals by themselves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PhraseWord {
    None,
    How,
    Much,
    Book,
    It,
    Schedule,
    A,
}

/// The state of [`intent_signal_mask`]'s scan: the current word and the one before it.
#[derive(Default)]
struct WordScan {
    word: [u8; LONGEST_WORD],
    len: usize,
    /// The current word cannot be a vocabulary word (not ASCII, or too long).
    other: bool,
    /// The previous word, when it is a phrase word.
    previous: Option<PhraseWord>,
    found: u8,
}

impl WordScan {
    fn push(&mut self, b: u8) {
        if self.len < LONGEST_WORD {
            self.word[self.len] = b;
        } else {
            self.other = true;
        }
        self.len += 1;
    }

    fn push_other(&mut self) {
        self.other = true;
        self.len += 1;
    }

    fn end_word(&mut self) {
        if self.len == 0 {
            return;
        }
        let (signal, phrase) = if self.other {
            (None, PhraseWord::None)
        } else {
            classify(&self.word[..self.len])
        };
        if let Some(i) = signal {
            self.found |= 1 << i;
        }
        let phrase_signal = match (self.previous, phrase) {
            (Some(PhraseWord::How), PhraseWord::Much) => Some(PRICE),
            (Some(PhraseWord::Book), PhraseWord::It) => Some(BUY),
            (Some(PhraseWord::Schedule), PhraseWord::A) => Some(VISIT),
            _ => None,
        };
        if let Some(i) = phrase_signal {
            self.found |= 1 << i;
        }
        self.previous = Some(phrase);
        self.len = 0;
        self.other = false;
    }
}

const PRICE: u8 = 0;
const QUOTE: u8 = 1;
const BUY: u8 = 2;
const AVAILABILITY: u8 = 3;
const FINANCING: u8 = 4;
const VISIT: u8 = 5;
const DISCOUNT: u8 = 6;

/// The signal a single (normalised, ASCII) word expresses, and the phrase word it is.
fn classify(word: &[u8]) -> (Option<u8>, PhraseWord) {
    let signal = match word {
        b"precio" | b"precios" | b"cuanto" | b"cuesta" | b"cuestan" | b"costo" | b"costos"
        | b"tarifa" | b"price" | b"prices" | b"pricing" | b"cost" | b"costs" | b"rate" => PRICE,
        b"cotizacion" | b"cotizaciones" | b"cotizar" | b"presupuesto" | b"quote" | b"quotation"
        | b"estimate" => QUOTE,
        b"comprar" | b"compro" | b"compra" | b"adquirir" | b"reservar" | b"buy" | b"purchase" => {
            BUY
        }
        b"disponible" | b"disponibles" | b"disponibilidad" | b"stock" | b"available"
        | b"availability" => AVAILABILITY,
        b"financiacion" | b"financiamiento" | b"financiar" | b"credito" | b"cuotas"
        | b"financing" | b"installments" | b"credit" => FINANCING,
        b"visita" | b"visitar" | b"cita" | b"agendar" | b"visit" | b"appointment" => VISIT,
        b"descuento" | b"descuentos" | b"oferta" | b"promocion" | b"discount" | b"offer"
        | b"deal" => DISCOUNT,
        b"how" => return (None, PhraseWord::How),
        b"much" => return (None, PhraseWord::Much),
        b"book" => return (None, PhraseWord::Book),
        b"it" => return (None, PhraseWord::It),
        b"schedule" => return (None, PhraseWord::Schedule),
        b"a" => return (None, PhraseWord::A),
        _ => return (None, PhraseWord::None),
    };
    (Some(signal), PhraseWord::None)
}

/// The accent-free form of a lower-case character (see [`normalize`]).
fn fold_accent(c: char) -> char {
    match c {
        'á' | 'à' | 'ä' | 'â' | 'ã' => 'a',
        'é' | 'è' | 'ë' | 'ê' => 'e',
        'í' | 'ì' | 'ï' | 'î' => 'i',
        'ó' | 'ò' | 'ö' | 'ô' | 'õ' => 'o',
        'ú' | 'ù' | 'ü' | 'û' => 'u',
        'ñ' => 'n',
        'ç' => 'c',
        other => other,
    }
}

/// Lower case without accents, so "Cotización" matches "cotizacion" and "BOGOTÁ" matches "Bogota".
#[cfg(test)]
fn normalize(s: &str) -> String {
    normalized_chars(s).collect()
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
    fn location_and_source_match_as_normalised_copies_do() {
        let names = [
            "Bogotá",
            " BOGOTA ",
            "bogota",
            "Bogotà",
            "Bogot",
            "Bogotaa",
            "",
            " ",
            "\u{a0}Lima\u{3000}",
            "lima",
            "LİMA",
            "li̇ma",
            "Medellín",
            "MEDELLÍN",
            "medellin\t",
            "Cali",
            "ñuñoa",
            "NUÑOA",
            "Ωmega",
            "ωMEGA",
            "Straße",
            "STRASSE",
        ];
        for loc in names {
            for area in names {
                let reference = {
                    let l = normalize(loc);
                    let l = l.trim();
                    !l.is_empty() && normalize(area).trim() == l
                };
                assert_eq!(
                    is_high_value(loc, &[area.to_string()]),
                    reference,
                    "{loc:?} in {area:?}"
                );
            }
        }
        for source in [
            "META_ADS",
            "meta_ads",
            " Meta_Ads ",
            "META ADS",
            "META_ADSS",
            "referral",
            "WEBSITE\n",
            "websíte",
            "",
            "OTHER",
        ] {
            let reference = match source.trim().to_ascii_uppercase().as_str() {
                "META_ADS" => 0.30,
                "REFERRAL" => 0.25,
                "WEBSITE" => 0.20,
                _ => 0.0,
            };
            assert_eq!(source_weight(source), reference, "{source:?}");
        }
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

    /// The implementation [`intent_signal_mask`] replaced: lower-case and strip accents into a
    /// new string, split it into words, look for each phrase among consecutive words.
    fn reference_signals(text: &str) -> Vec<&'static str> {
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

    #[test]
    fn the_one_pass_scan_finds_what_splitting_into_words_finds() {
        let mut texts: Vec<String> = vec![
            String::new(),
            "a".into(),
            "how  much".into(),
            "how, much".into(),
            "how much".into(),
            "HOW MUCH?".into(),
            "how x much".into(),
            "book it".into(),
            "book  it!".into(),
            "book its".into(),
            "schedule a visit".into(),
            "schedule ä".into(),
            "schedule á".into(),
            "schedule à la carte".into(),
            "how ñ much".into(),
            "how\u{301} much".into(),
            "howé much".into(),
            "İt book İt".into(),
            "book İt".into(),
            "KOST cost".into(),
            "\u{212A}ost".into(),
            "ＰＲＩＣＥ price".into(),
            "disponibilidades disponibilidad disponibilidadx".into(),
            "financiamientos financiamiento".into(),
            "costo3 3costo costo_3 costo-3".into(),
            "ßtock stock".into(),
            "crédito CRÉDITO credito cREDITO".into(),
            "PROMOCIÓN promocion Promoción".into(),
            "cotización cotizacion cotizaciön".into(),
            "😀precio😀 cuánto".into(),
            "Ωmega cuesta".into(),
            "presupuesto\ncita\tdeal".into(),
        ];
        for (_, phrases) in SIGNALS {
            for p in *phrases {
                texts.push(p.to_string());
                texts.push(p.to_uppercase());
                texts.push(format!("x{p}"));
                texts.push(format!("{p}x"));
                texts.push(format!("¿{p}?"));
                texts.push(p.replace(' ', "  , "));
            }
        }
        // Pairs of words from the vocabulary and around it, joined in several ways.
        let words = [
            "how",
            "much",
            "book",
            "it",
            "schedule",
            "a",
            "visit",
            "precio",
            "ñ",
            "é",
            "x",
            "İ",
            "cuánto",
            "cotización",
            "much2",
        ];
        for a in words {
            for b in words {
                for sep in [" ", "", ",", " é ", "\u{301}"] {
                    texts.push(format!("{a}{sep}{b}"));
                }
            }
        }
        for text in &texts {
            assert_eq!(
                intent_signals(text),
                reference_signals(text),
                "text {text:?}"
            );
        }
    }

    #[test]
    fn every_vocabulary_word_is_recognised_for_its_signal() {
        for (name, phrases) in SIGNALS {
            for p in *phrases {
                assert_eq!(intent_signals(p), vec![*name], "{p}");
                assert!(p.len() <= LONGEST_WORD || p.contains(' '), "{p}");
            }
        }
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

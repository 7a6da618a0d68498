//! Every human-readable text the processors put in notifications, per language. Spanish is the
//! default (contract §4.1); English is here so a tenant can choose it (`language = "en"`). The
//! notification's `data` carries the facts, so a front end may also render its own texts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Es,
    En,
}

/// A title and a message.
pub type Text = (String, String);

/// "1 h", "1 h 30 min", "45 s", "2 d 3 h": compact, the same symbols in both languages.
pub fn duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{} ms", d.as_millis());
    }
    let days = s / 86_400;
    s %= 86_400;
    let hours = s / 3600;
    s %= 3600;
    let minutes = s / 60;
    let seconds = s % 60;
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    parts.join(" ")
}

pub fn unanswered(lang: Language, waited: Duration) -> Text {
    let w = duration(waited);
    match lang {
        Language::Es => (
            "Conversación sin respuesta".into(),
            format!("El cliente espera respuesta desde hace {w}"),
        ),
        Language::En => (
            "Unanswered conversation".into(),
            format!("The customer has been waiting for a reply for {w}"),
        ),
    }
}

/// Why an unanswered-conversation notification is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// A seller replied.
    Resolved,
    /// The conversation was closed.
    Closed,
    /// A late event showed the notification was wrong (the wait started earlier, or was
    /// answered in time).
    Corrected,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Resolved => "resolved",
            Resolution::Closed => "closed",
            Resolution::Corrected => "corrected",
        }
    }
}

pub fn unanswered_withdrawn(lang: Language, why: Resolution) -> Text {
    match (lang, why) {
        (Language::Es, Resolution::Resolved) => (
            "Conversación respondida".into(),
            "La conversación ya tiene respuesta".into(),
        ),
        (Language::Es, Resolution::Closed) => (
            "Conversación cerrada".into(),
            "La conversación se cerró".into(),
        ),
        (Language::En, Resolution::Resolved) => (
            "Conversation answered".into(),
            "The conversation has been answered".into(),
        ),
        (Language::En, Resolution::Closed) => (
            "Conversation closed".into(),
            "The conversation was closed".into(),
        ),
        (Language::Es, Resolution::Corrected) => (
            "Alerta corregida".into(),
            "Un mensaje que llegó tarde cambió esta espera: esta alerta queda anulada".into(),
        ),
        (Language::En, Resolution::Corrected) => (
            "Alert corrected".into(),
            "A message that arrived late changed this wait: this alert is void".into(),
        ),
    }
}

pub fn hot_lead(lang: Language, name: Option<&str>, score: f64) -> Text {
    let pct = (score * 100.0).round();
    match lang {
        Language::Es => (
            "Lead caliente".into(),
            match name {
                Some(n) => format!("{n} tiene una puntuación de {pct}/100: contáctalo ahora"),
                None => format!("Un lead tiene una puntuación de {pct}/100: contáctalo ahora"),
            },
        ),
        Language::En => (
            "Hot lead".into(),
            match name {
                Some(n) => format!("{n} scores {pct}/100: contact them now"),
                None => format!("A lead scores {pct}/100: contact them now"),
            },
        ),
    }
}

pub fn follow_up(lang: Language, name: Option<&str>, due_in: Option<Duration>) -> Text {
    match (lang, due_in) {
        (Language::Es, Some(d)) => (
            "Seguimiento próximo".into(),
            format!(
                "Seguimiento con {} en {}",
                name.unwrap_or("un lead"),
                duration(d)
            ),
        ),
        (Language::Es, None) => (
            "Seguimiento pendiente".into(),
            format!("Es hora del seguimiento con {}", name.unwrap_or("un lead")),
        ),
        (Language::En, Some(d)) => (
            "Upcoming follow-up".into(),
            format!(
                "Follow-up with {} in {}",
                name.unwrap_or("a lead"),
                duration(d)
            ),
        ),
        (Language::En, None) => (
            "Follow-up due".into(),
            format!("Time to follow up with {}", name.unwrap_or("a lead")),
        ),
    }
}

pub fn session_timeout(lang: Language, client: &str, agent: u64, silent_for: Duration) -> Text {
    let d = duration(silent_for);
    match lang {
        Language::Es => (
            "Sesión devuelta a la cola".into(),
            format!(
                "El cliente {client} vuelve a la cola: el agente {agent} no da señal desde hace {d}"
            ),
        ),
        Language::En => (
            "Session returned to the queue".into(),
            format!("Client {client} is back in the queue: agent {agent} silent for {d}"),
        ),
    }
}

pub fn session_resumed(lang: Language, client: &str) -> Text {
    match lang {
        Language::Es => (
            "Sesión reanudada".into(),
            format!("La sesión del cliente {client} sigue activa"),
        ),
        Language::En => (
            "Session resumed".into(),
            format!("Client {client}'s session is still active"),
        ),
    }
}

/// What a performance alert is about (contract §3.7).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PerformanceCondition {
    /// Mean response time today above the tenant's `alert_mean_response`.
    SlowResponse,
    /// More than `alert_unanswered` conversations waiting past their deadline.
    Unanswered,
    /// Conversion rate below `alert_conversion_rate` with more than `alert_conversion_min_leads`.
    LowConversion,
}

impl PerformanceCondition {
    pub const ALL: [PerformanceCondition; 3] = [
        PerformanceCondition::SlowResponse,
        PerformanceCondition::Unanswered,
        PerformanceCondition::LowConversion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PerformanceCondition::SlowResponse => "slow_response",
            PerformanceCondition::Unanswered => "unanswered",
            PerformanceCondition::LowConversion => "low_conversion",
        }
    }
}

/// `seller` is the seller's name if known, else "#<id>"; the figures are the ones that crossed.
pub fn performance_alert(
    lang: Language,
    seller: &str,
    condition: PerformanceCondition,
    mean_response: Duration,
    unanswered: u32,
    conversion_rate: f64,
    leads: u32,
) -> Text {
    let pct = (conversion_rate * 100.0).round();
    let mean = duration(Duration::from_secs(mean_response.as_secs()));
    match (lang, condition) {
        (Language::Es, PerformanceCondition::SlowResponse) => (
            "Alerta de rendimiento: respuestas lentas".into(),
            format!("{seller} tarda en promedio {mean} en responder hoy"),
        ),
        (Language::Es, PerformanceCondition::Unanswered) => (
            "Alerta de rendimiento: conversaciones sin respuesta".into(),
            format!("{seller} tiene {unanswered} conversaciones sin respuesta"),
        ),
        (Language::Es, PerformanceCondition::LowConversion) => (
            "Alerta de rendimiento: baja conversión".into(),
            format!("{seller} convierte el {pct}% de sus {leads} leads"),
        ),
        (Language::En, PerformanceCondition::SlowResponse) => (
            "Performance alert: slow responses".into(),
            format!("{seller} takes {mean} on average to reply today"),
        ),
        (Language::En, PerformanceCondition::Unanswered) => (
            "Performance alert: unanswered conversations".into(),
            format!("{seller} has {unanswered} unanswered conversations"),
        ),
        (Language::En, PerformanceCondition::LowConversion) => (
            "Performance alert: low conversion".into(),
            format!("{seller} converts {pct}% of their {leads} leads"),
        ),
    }
}

/// The daily report's title and summary line about `day`.
pub fn daily_report(
    lang: Language,
    day: chrono::NaiveDate,
    conversations: u32,
    answered: u32,
    mean_response_seconds: Option<f64>,
    converted: u32,
    alerts: u32,
) -> Text {
    let date = day.format("%Y-%m-%d");
    let mean = mean_response_seconds
        .map(|s| duration(Duration::from_secs(s.max(0.0).round() as u64)))
        .unwrap_or_else(|| "—".into());
    match lang {
        Language::Es => (
            format!("Informe diario del {date}"),
            format!(
                "Ayer: {conversations} conversaciones, {answered} esperas respondidas \
                 (tiempo medio {mean}), {converted} leads convertidos, {alerts} alertas"
            ),
        ),
        Language::En => (
            format!("Daily report for {date}"),
            format!(
                "Yesterday: {conversations} conversations, {answered} waits answered \
                 (mean time {mean}), {converted} leads converted, {alerts} alerts"
            ),
        ),
    }
}

pub fn open_report(lang: Language) -> String {
    match lang {
        Language::Es => "Ver informe".into(),
        Language::En => "Open report".into(),
    }
}

pub fn open_seller(lang: Language) -> String {
    match lang {
        Language::Es => "Ver vendedor".into(),
        Language::En => "Open seller".into(),
    }
}

pub fn open_chat(lang: Language) -> String {
    match lang {
        Language::Es => "Abrir chat".into(),
        Language::En => "Open chat".into(),
    }
}

pub fn open_lead(lang: Language) -> String {
    match lang {
        Language::Es => "Ver lead".into(),
        Language::En => "Open lead".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_secs(3600)), "1 h");
        assert_eq!(duration(Duration::from_secs(5400)), "1 h 30 min");
        assert_eq!(duration(Duration::from_secs(2)), "2 s");
        assert_eq!(duration(Duration::from_secs(90_000)), "1 d 1 h");
        assert_eq!(duration(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn spanish_is_the_default() {
        assert_eq!(Language::default(), Language::Es);
        let (title, message) = unanswered(Language::Es, Duration::from_secs(3600));
        assert_eq!(title, "Conversación sin respuesta");
        assert_eq!(message, "El cliente espera respuesta desde hace 1 h");
    }
}

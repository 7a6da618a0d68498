//! Rule edges with made-up times. `t(m)` is minute `m` after a fixed origin.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use vigia_schemas::*;

use super::*;
use crate::config::Config;

const TENANT: u64 = 42;

fn origin() -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

/// Minute `m` (fractions allowed) after the origin.
fn t(m: f64) -> DateTime<Utc> {
    origin() + chrono::Duration::milliseconds((m * 60_000.0).round() as i64)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn config() -> Config {
    Config {
        watermark_delay: Duration::from_secs(1),
        ..Config::default()
    }
}

/// The first pending deadline of a rule (not the daily report, always scheduled).
fn next_rule_deadline(e: &PartitionEngine) -> Option<DateTime<Utc>> {
    e.tenants
        .values()
        .flat_map(|t| t.deadlines.set.iter())
        .filter(|(_, k)| !matches!(k, DeadlineKey::DailyReport(_)))
        .map(|(at, _)| *at)
        .min()
}

fn rule_deadlines(t: &TenantState) -> usize {
    t.deadlines
        .set
        .iter()
        .filter(|(_, k)| !matches!(k, DeadlineKey::DailyReport(_)))
        .count()
}

fn without_reports(outs: Vec<Output>) -> Vec<Output> {
    outs.into_iter()
        .filter(
            |o| !matches!(o, Output::Notification(n) if n.kind == NotificationType::DailyReport),
        )
        .collect()
}

fn engine() -> PartitionEngine {
    PartitionEngine::new(Arc::new(config()))
}

fn engine_with(f: impl FnOnce(&mut Config)) -> PartitionEngine {
    let mut c = config();
    f(&mut c);
    PartitionEngine::new(Arc::new(c))
}

fn ev(n: u128, at: DateTime<Utc>, payload: Payload) -> Event {
    Event {
        event_id: id(n),
        tenant_id: TENANT,
        occurred_at: at,
        payload,
    }
}

fn received(n: u128, conv: &str, at: DateTime<Utc>, seller: Option<u64>, text: &str) -> Event {
    ev(
        n,
        at,
        Payload::MessageReceived(MessageReceived {
            conversation_id: conv.into(),
            channel: Channel::Whatsapp,
            seller_id: seller,
            phone_number: None,
            text: (!text.is_empty()).then(|| text.to_string()),
        }),
    )
}

fn sent(n: u128, conv: &str, at: DateTime<Utc>, seller: u64, automated: bool) -> Event {
    ev(
        n,
        at,
        Payload::MessageSent(MessageSent {
            conversation_id: conv.into(),
            seller_id: seller,
            automated,
        }),
    )
}

fn assigned(n: u128, conv: &str, at: DateTime<Utc>, seller: u64) -> Event {
    ev(
        n,
        at,
        Payload::ConversationAssigned(ConversationAssigned {
            conversation_id: conv.into(),
            seller_id: seller,
        }),
    )
}

fn closed(n: u128, conv: &str, at: DateTime<Utc>) -> Event {
    ev(
        n,
        at,
        Payload::ConversationClosed(ConversationClosed {
            conversation_id: conv.into(),
        }),
    )
}

fn lead_created(
    n: u128,
    lead: &str,
    at: DateTime<Utc>,
    source: LeadSource,
    seller: Option<u64>,
    conv: Option<&str>,
    location: Option<&str>,
) -> Event {
    ev(
        n,
        at,
        Payload::LeadCreated(LeadCreated {
            lead_id: lead.into(),
            source,
            seller_id: seller,
            name: Some("Ana".into()),
            phone_number: None,
            location: location.map(str::to_string),
            estimated_value: None,
            conversation_id: conv.map(EntityId::from),
        }),
    )
}

fn status(n: u128, lead: &str, at: DateTime<Utc>, status: LeadStatus) -> Event {
    ev(
        n,
        at,
        Payload::LeadStatusChanged(LeadStatusChanged {
            lead_id: lead.into(),
            status,
        }),
    )
}

fn follow_up(n: u128, lead: &str, at: DateTime<Utc>, seller: u64, due: DateTime<Utc>) -> Event {
    ev(
        n,
        at,
        Payload::LeadFollowUpScheduled(LeadFollowUpScheduled {
            lead_id: lead.into(),
            seller_id: seller,
            due_at: due,
            note: Some("llamar".into()),
        }),
    )
}

fn session(n: u128, kind: &str, s: &str, at: DateTime<Utc>) -> Event {
    let r = SessionRef {
        session_id: s.into(),
        client_id: "client-9".into(),
        agent_id: 5,
    };
    let payload = match kind {
        "started" => Payload::SessionStarted(r),
        "heartbeat" => Payload::SessionHeartbeat(r),
        _ => Payload::SessionEnded(SessionEnded {
            session_id: r.session_id,
            client_id: r.client_id,
            agent_id: r.agent_id,
            result: SessionResult::Managed,
        }),
    };
    ev(n, at, payload)
}

/// Feeds events in order, collecting every output but the seller-metrics snapshots (which the
/// rule tests are not about; see [`feed_all`]).
fn feed(e: &mut PartitionEngine, events: &[Event]) -> Vec<Output> {
    feed_all(e, events)
        .into_iter()
        .filter(|o| !matches!(o, Output::SellerMetrics(_)))
        .collect()
}

/// Feeds events in order, collecting every output.
fn feed_all(e: &mut PartitionEngine, events: &[Event]) -> Vec<Output> {
    events.iter().flat_map(|x| e.on_event(x)).collect()
}

fn notifications(outs: &[Output]) -> Vec<&Notification> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Notification(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn of_kind(outs: &[Output], kind: NotificationType) -> Vec<&Notification> {
    notifications(outs)
        .into_iter()
        .filter(|n| n.kind == kind)
        .collect()
}

fn samples(outs: &[Output]) -> Vec<&ResponseTimeSample> {
    outs.iter()
        .filter_map(|o| match o {
            Output::ResponseTime(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn scores(outs: &[Output]) -> Vec<&LeadScore> {
    outs.iter()
        .filter_map(|o| match o {
            Output::LeadScore(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn unanswered_id(conv: &str, starter: u128) -> Uuid {
    derive_id(
        "notification/unanswered",
        &[&TENANT.to_string(), conv, &id(starter).to_string()],
    )
}

// ---------------------------------------------------------------- unanswered conversations

#[test]
fn unanswered_fires_exactly_at_the_deadline_with_its_content() {
    let mut e = engine();
    assert!(feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "hola")]).is_empty());
    assert_eq!(next_rule_deadline(&e), Some(t(60.0)));

    let just_before = t(60.0) - chrono::Duration::milliseconds(1);
    assert!(e.advance_watermark(just_before).is_empty());
    let outs = e.advance_watermark(t(60.0));
    let n = notifications(&outs);
    assert_eq!(n.len(), 1, "{outs:?}");
    let n = n[0];
    assert_eq!(n.id, unanswered_id("c1", 1));
    assert_eq!(n.tenant_id, TENANT);
    assert_eq!(n.kind, NotificationType::UnansweredConversation);
    assert_eq!(n.priority, Priority::High);
    assert_eq!(n.audience, Audience::User { user_id: 7 });
    assert_eq!(n.created_at, t(60.0));
    assert_eq!(n.title, "Conversación sin respuesta");
    assert_eq!(n.message, "El cliente espera respuesta desde hace 1 h");
    assert_eq!(n.withdraws, None);
    assert_eq!(n.data["conversation_id"], json!("c1"));
    assert_eq!(n.data["seller_id"], json!(7));
    assert_eq!(n.data["channel"], json!("whatsapp"));
    assert_eq!(
        n.data["waiting_since"],
        serde_json::to_value(t(0.0)).unwrap()
    );
    assert_eq!(n.data["deadline"], serde_json::to_value(t(60.0)).unwrap());
    assert_eq!(n.actions.len(), 1);
    assert_eq!(n.actions[0].action, "open_chat");
    assert_eq!(n.actions[0].label, "Abrir chat");
    assert_eq!(n.actions[0].params, json!({"conversation_id": "c1"}));

    // Fires once: later watermarks and the deadline queue are empty.
    assert!(e.advance_watermark(t(120.0)).is_empty());
    assert_eq!(next_rule_deadline(&e), None);
}

#[test]
fn a_watermark_past_the_deadline_fires_it_with_created_at_the_deadline() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let outs = e.advance_watermark(t(95.0));
    let n = notifications(&outs);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].created_at, t(60.0), "event time, not the watermark");
}

#[test]
fn event_time_alone_fires_deadlines_on_a_busy_stream() {
    // A later event of another conversation moves the tenant's event-time watermark past the
    // deadline: it fires inside on_event, before that event is applied, with no clock at all.
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let outs = e.on_event(&received(
        2,
        "c2",
        t(60.0) + chrono::Duration::seconds(1),
        None,
        "",
    ));
    assert_eq!(notifications(&outs).len(), 1);
    assert_eq!(notifications(&outs)[0].id, unanswered_id("c1", 1));
    // Exactly at deadline + delay - 1 ms it would not have.
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let outs = e.on_event(&received(
        2,
        "c2",
        t(60.0) + chrono::Duration::milliseconds(999),
        None,
        "",
    ));
    assert!(notifications(&outs).is_empty());
}

#[test]
fn a_reply_before_the_deadline_cancels_it_and_measures_the_response() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(12.5), 8, false),
        ],
    );
    let s = samples(&outs);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0].id,
        derive_id(
            "response_time",
            &["42", "c1", &id(1).to_string(), &id(2).to_string()]
        )
    );
    assert_eq!(s[0].seller_id, 8, "the replier, not the assigned seller");
    assert_eq!(s[0].customer_event_id, id(1));
    assert_eq!(s[0].reply_event_id, id(2));
    assert_eq!(s[0].waiting_since, t(0.0));
    assert_eq!(s[0].replied_at, t(12.5));
    assert_eq!(s[0].response_seconds, 750.0);
    assert_eq!(next_rule_deadline(&e), None);
    assert!(e.advance_watermark(t(200.0)).is_empty());
}

#[test]
fn a_reply_exactly_at_the_deadline_answers_in_time() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(60.0), 7, false),
        ],
    );
    assert!(notifications(&outs).is_empty());
    assert_eq!(samples(&outs)[0].response_seconds, 3600.0);
    assert!(e.advance_watermark(t(200.0)).is_empty());
}

#[test]
fn a_reply_after_the_deadline_seen_before_it_fired_gives_notification_and_withdrawal() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            // The deadline (60) is past in event time, though no watermark reached it yet
            // (event time watermark = 60m + 0.5s - 1s).
            sent(
                2,
                "c1",
                t(60.0) + chrono::Duration::milliseconds(500),
                7,
                false,
            ),
        ],
    );
    let n = notifications(&outs);
    assert_eq!(n.len(), 2, "{outs:?}");
    assert_eq!(n[0].id, unanswered_id("c1", 1));
    assert_eq!(n[1].withdraws, Some(n[0].id));
    assert_eq!(samples(&outs).len(), 1);
}

#[test]
fn a_reply_after_it_fired_withdraws_it() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let fired = e.advance_watermark(t(61.0));
    let original = notifications(&fired)[0].clone();
    let outs = feed(&mut e, &[sent(2, "c1", t(75.0), 9, false)]);
    let n = notifications(&outs);
    assert_eq!(n.len(), 1);
    let w = n[0];
    assert_eq!(w.withdraws, Some(original.id));
    assert_eq!(
        w.id,
        derive_id(
            "notification/unanswered/withdrawal",
            &[&original.id.to_string(), "resolved"]
        )
    );
    assert_ne!(w.id, original.id);
    assert_eq!(w.kind, NotificationType::UnansweredConversation);
    assert_eq!(w.audience, original.audience);
    assert_eq!(w.data["state"], json!("resolved"));
    assert_eq!(w.data["resolved_by"], json!(9));
    assert_eq!(
        w.data["resolved_at"],
        serde_json::to_value(t(75.0)).unwrap()
    );
    assert_eq!(w.created_at, t(75.0));
    assert_eq!(w.title, "Conversación respondida");
    assert_eq!(samples(&outs)[0].response_seconds, 75.0 * 60.0);
    // A second reply does nothing more for the conversation: what it brings is the performance
    // alert of the minute it starts (seller 9's 75 min reply is above the 30 min mean).
    let outs = feed(&mut e, &[sent(3, "c1", t(76.0), 9, false)]);
    let kinds: Vec<_> = notifications(&outs).iter().map(|n| n.kind).collect();
    assert_eq!(kinds, vec![NotificationType::PerformanceAlert]);
    assert_eq!(outs.len(), 1);
}

#[test]
fn a_late_reply_from_before_the_deadline_still_withdraws_after_the_fire() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let fired = e.advance_watermark(t(61.0));
    let original = notifications(&fired)[0].id;
    // The reply happened at 59 but reached us after the notification fired.
    let outs = feed(&mut e, &[sent(2, "c1", t(59.0), 7, false)]);
    let n = notifications(&outs);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].withdraws, Some(original));
    assert_eq!(n[0].created_at, t(60.0), "never before what it withdraws");
    assert_eq!(n[0].data["state"], "corrected", "it was answered in time");
}

#[test]
fn automated_replies_do_not_answer() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(1.0), 7, true),
        ],
    );
    assert!(outs.is_empty(), "{outs:?}");
    assert_eq!(notifications(&e.advance_watermark(t(60.0))).len(), 1);
}

#[test]
fn later_customer_messages_do_not_restart_the_wait() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            received(2, "c1", t(30.0), Some(7), ""),
            received(3, "c1", t(50.0), Some(7), ""),
        ],
    );
    assert!(outs.is_empty());
    assert_eq!(next_rule_deadline(&e), Some(t(60.0)));
    let n = e.advance_watermark(t(60.0));
    assert_eq!(notifications(&n)[0].id, unanswered_id("c1", 1));
    // After a reply, the next customer message starts a new wait.
    let outs = feed(
        &mut e,
        &[
            sent(4, "c1", t(70.0), 7, false),
            received(5, "c1", t(80.0), None, ""),
        ],
    );
    assert_eq!(samples(&outs)[0].customer_event_id, id(1));
    assert_eq!(next_rule_deadline(&e), Some(t(140.0)));
}

#[test]
fn reassignment_during_the_wait_moves_the_audience() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            assigned(2, "c1", t(30.0), 9),
        ],
    );
    let outs = e.advance_watermark(t(60.0));
    let n = notifications(&outs);
    assert_eq!(n[0].audience, Audience::User { user_id: 9 });
    assert_eq!(n[0].data["seller_id"], json!(9));
    // A reassignment after the fire does not re-send; the withdrawal goes to the audience that
    // was notified.
    let outs = feed(
        &mut e,
        &[
            assigned(3, "c1", t(61.0), 11),
            sent(4, "c1", t(62.0), 11, false),
        ],
    );
    let n = notifications(&outs);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].audience, Audience::User { user_id: 9 });
}

#[test]
fn an_older_assignment_arriving_late_does_not_override_a_newer_one() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            assigned(1, "c1", t(10.0), 9),
            received(2, "c1", t(20.0), None, ""),
            assigned(3, "c1", t(5.0), 4),
        ],
    );
    let n = e.advance_watermark(t(80.0));
    assert_eq!(notifications(&n)[0].audience, Audience::User { user_id: 9 });
}

#[test]
fn without_a_seller_the_secretaries_are_notified() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), None, "")]);
    let outs = e.advance_watermark(t(60.0));
    let n = notifications(&outs);
    assert_eq!(
        n[0].audience,
        Audience::Role {
            role: Role::Secretary
        }
    );
    assert_eq!(n[0].data["seller_id"], json!(null));
}

#[test]
fn closing_the_conversation_cancels_or_withdraws() {
    // Closed before the deadline: nothing, ever.
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            closed(2, "c1", t(30.0)),
        ],
    );
    assert!(outs.is_empty());
    assert!(e.advance_watermark(t(200.0)).is_empty());

    // Closed after the fire: a withdrawal with state "closed", and no response-time sample.
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let original = notifications(&e.advance_watermark(t(60.0)))[0].id;
    let outs = feed(&mut e, &[closed(2, "c1", t(90.0))]);
    let n = notifications(&outs);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].withdraws, Some(original));
    assert_eq!(n[0].data["state"], json!("closed"));
    assert!(samples(&outs).is_empty());

    // A customer writing after the close starts a new wait.
    feed(&mut e, &[received(3, "c1", t(100.0), None, "")]);
    assert_eq!(next_rule_deadline(&e), Some(t(160.0)));
}

#[test]
fn the_threshold_is_per_tenant() {
    let mut e = engine_with(|c| {
        c.tenants.insert(
            TENANT,
            crate::config::ThresholdOverrides {
                unanswered_after: Some(Duration::from_secs(120)),
                language: Some(crate::texts::Language::En),
                ..Default::default()
            },
        );
    });
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    assert_eq!(next_rule_deadline(&e), Some(t(2.0)));
    let outs = e.advance_watermark(t(2.0));
    let n = notifications(&outs);
    assert_eq!(n[0].title, "Unanswered conversation");
    assert_eq!(
        n[0].message,
        "The customer has been waiting for a reply for 2 min"
    );
    // Another tenant keeps the default hour.
    let mut other = received(2, "c1", t(0.0), Some(7), "");
    other.tenant_id = 43;
    e.on_event(&other);
    assert_eq!(next_rule_deadline(&e), Some(t(60.0)));
}

// ---------------------------------------------------------------- out of order, duplicates, lateness

#[test]
fn a_reply_that_arrives_before_its_customer_message_still_gives_the_sample() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            sent(2, "c1", t(10.0), 8, false),
            received(1, "c1", t(0.0), Some(7), ""),
        ],
    );
    let s = samples(&outs);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].customer_event_id, id(1));
    assert_eq!(s[0].response_seconds, 600.0);
    assert!(notifications(&outs).is_empty());
    assert_eq!(next_rule_deadline(&e), None, "no wait is left open");
}

#[test]
fn a_late_customer_message_answered_after_its_deadline_notifies_and_withdraws() {
    // Same outputs as in order: reply at 90 to a message at 0 is an hour and a half late.
    let engine = || engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    let in_order = feed(
        &mut engine(),
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(90.0), 7, false),
        ],
    );
    let reversed = feed(
        &mut engine(),
        &[
            sent(2, "c1", t(90.0), 7, false),
            received(1, "c1", t(0.0), Some(7), ""),
        ],
    );
    assert_eq!(notifications(&in_order).len(), 2);
    let ids = |o: &[Output]| {
        let mut v: Vec<Uuid> = o.iter().filter_map(Output::id).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&in_order), ids(&reversed));
}

#[test]
fn an_earlier_customer_message_arriving_late_moves_the_start_of_the_wait() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            received(2, "c1", t(20.0), Some(7), ""),
            received(1, "c1", t(5.0), Some(7), ""),
        ],
    );
    assert_eq!(next_rule_deadline(&e), Some(t(65.0)));
    let n = e.advance_watermark(t(65.0));
    assert_eq!(notifications(&n)[0].id, unanswered_id("c1", 1));
    let outs = feed(&mut e, &[sent(3, "c1", t(66.0), 7, false)]);
    assert_eq!(samples(&outs)[0].customer_event_id, id(1));
}

#[test]
fn a_late_reply_splits_waits_that_arrived_before_it() {
    // Customer at 0 and 30 arrived; then a reply at 10: it answers the first, and the second
    // starts a new wait.
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            received(2, "c1", t(30.0), Some(7), ""),
            sent(3, "c1", t(10.0), 7, false),
        ],
    );
    assert_eq!(samples(&outs)[0].customer_event_id, id(1));
    assert_eq!(next_rule_deadline(&e), Some(t(90.0)));
    let outs = feed(&mut e, &[sent(4, "c1", t(40.0), 7, false)]);
    assert_eq!(samples(&outs)[0].customer_event_id, id(2));
    assert_eq!(next_rule_deadline(&e), None);
}

/// What users and analysts are left with once corrections are applied: the response-time
/// samples not retracted (by id, with their content), and the unanswered-conversation alerts not
/// corrected, by wait (conversation, customer message that started it), each with whether it was
/// withdrawn (resolved or closed). An alert sent again after a correction has another id, so
/// alerts are compared by wait. And the lead scores that status changes caused: what the
/// conversions in ClickHouse's rollup count.
#[derive(Debug, PartialEq)]
struct Net {
    samples: BTreeMap<Uuid, String>,
    unanswered: BTreeMap<(String, String), bool>,
    /// Lead scores caused by status changes (conversions among them): id, seller, time, status.
    status_changes: BTreeSet<String>,
}

fn net(outs: &[Output]) -> Net {
    let mut samples = BTreeMap::new();
    let mut retracted = BTreeSet::new();
    let mut alerts: BTreeMap<Uuid, (String, String)> = BTreeMap::new();
    let mut withdrawn = BTreeSet::new();
    let mut corrected = BTreeSet::new();
    let mut status_changes = BTreeSet::new();
    for o in outs {
        match o {
            Output::LeadScore(l) if l.status_change.is_some() => {
                let change = format!(
                    "{} {} seller {:?} at {} -> {:?}",
                    l.id, l.lead_id, l.seller_id, l.computed_at, l.status_change
                );
                assert!(status_changes.insert(change), "one score per status change");
            }
            Output::ResponseTime(r) => match r.retracts {
                Some(id) => {
                    assert!(samples.contains_key(&id), "a retraction follows its sample");
                    retracted.insert(id);
                }
                None => {
                    let body = serde_json::to_string(r).unwrap();
                    assert!(samples.insert(r.id, body).is_none(), "one sample per id");
                }
            },
            Output::Notification(n) if n.kind == NotificationType::UnansweredConversation => {
                match n.withdraws {
                    None => {
                        let wait = (
                            n.data["conversation_id"].to_string(),
                            n.data["customer_event_id"].to_string(),
                        );
                        assert!(alerts.insert(n.id, wait).is_none(), "one alert per id");
                    }
                    Some(w) if n.data["state"] == "corrected" => {
                        corrected.insert(w);
                    }
                    Some(w) => {
                        withdrawn.insert(w);
                    }
                }
            }
            _ => {}
        }
    }
    samples.retain(|id, _| !retracted.contains(id));
    let mut unanswered = BTreeMap::new();
    for (id, wait) in alerts {
        if !corrected.contains(&id) {
            let again = unanswered.insert(wait, withdrawn.contains(&id));
            assert!(again.is_none(), "two standing alerts for one wait");
        }
    }
    Net {
        samples,
        unanswered,
        status_changes,
    }
}

/// Runs `events` in order with a 2 h allowed lateness, then a far watermark.
fn run_with_lateness(events: &[Event]) -> Vec<Output> {
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    let mut outs = feed(&mut e, events);
    outs.extend(e.advance_watermark(t(600.0)));
    outs
}

#[test]
fn late_events_correct_samples_and_alerts_to_what_in_order_processing_gives() {
    let m = |n, at| received(n, "c1", t(at), Some(7), "");
    let r = |n, at| sent(n, "c1", t(at), 7, false);
    let c = |n, at| closed(n, "c1", t(at));
    // (name, events in event-time order, arrival order as indexes, retractions expected)
    let cases: Vec<(&str, Vec<Event>, Vec<usize>, usize)> = vec![
        // An earlier customer message of an answered wait arrives after the reply.
        (
            "earlier message, answered in time",
            vec![m(1, 0.0), m(2, 20.0), r(3, 30.0)],
            vec![1, 2, 0],
            1,
        ),
        // … and the reply turns out to be past the earlier message's deadline: alert + withdrawal.
        (
            "earlier message, now late",
            vec![m(1, 0.0), m(2, 20.0), r(3, 70.0)],
            vec![1, 2, 0],
            1,
        ),
        // … both past their deadlines: the later start's alert is corrected, the earlier one's sent.
        (
            "earlier message, both late",
            vec![m(1, 0.0), m(2, 20.0), r(3, 90.0)],
            vec![1, 2, 0],
            1,
        ),
        // A reply arriving late between a message and the reply that answered it.
        (
            "late earlier reply",
            vec![m(1, 0.0), r(2, 10.0), r(3, 50.0)],
            vec![0, 2, 1],
            1,
        ),
        // … which splits the wait: the later reply answers the next message; the alert the
        // later reply caused (70 > 0 + 60) is corrected.
        (
            "late reply splits",
            vec![m(1, 0.0), r(2, 10.0), m(3, 30.0), r(4, 70.0)],
            vec![0, 2, 3, 1],
            1,
        ),
        // A late close takes the wait; the reply answers the message after the close.
        (
            "late close",
            vec![m(1, 0.0), c(2, 10.0), m(3, 20.0), r(4, 90.0)],
            vec![0, 2, 3, 1],
            1,
        ),
        // A close took the wait (of two messages) and a later message; the reply between them
        // arrives last: it answers the wait, the close ends the later message's.
        (
            "late reply before a close",
            vec![m(1, 0.0), m(2, 1.0), r(3, 2.0), m(4, 3.0), c(5, 4.0)],
            vec![0, 1, 3, 4, 2],
            0,
        ),
    ];
    for (name, events, order, retractions) in cases {
        let in_order = run_with_lateness(&events);
        let shuffled: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
        let late = run_with_lateness(&shuffled);
        assert!(!net(&in_order).samples.is_empty(), "{name}");
        assert_eq!(net(&late), net(&in_order), "{name}");
        let retracted = samples(&late)
            .iter()
            .filter(|s| s.retracts.is_some())
            .count();
        assert_eq!(retracted, retractions, "{name}: {late:#?}");
        assert!(
            samples(&in_order).iter().all(|s| s.retracts.is_none()),
            "{name}: nothing to correct in order"
        );
    }
}

#[test]
fn an_alert_corrected_and_then_right_again_is_sent_under_a_new_id() {
    // Deadlines are all in the clock's past (a backfill): each wait alerts as it starts.
    let run = |order: &[usize]| {
        let events = [
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(6.0), 7, false),
            received(3, "c1", t(7.0), Some(7), ""),
            received(4, "c1", t(9.0), Some(7), ""),
        ];
        let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
        let mut outs = e.advance_watermark(t(1000.0));
        for &i in order {
            outs.extend(feed(&mut e, &[events[i].clone()]));
        }
        outs
    };
    let in_order = run(&[0, 1, 2, 3]);
    // 3 first: its wait alerts; 1 moves the start (3's alert corrected); the reply ends 1's
    // wait in time (its alert corrected); 3 starts the next wait again and alerts again.
    let late = run(&[2, 0, 1, 3]);
    assert_eq!(net(&late), net(&in_order));
    let alerts_for_3: Vec<Uuid> = notifications(&late)
        .iter()
        .filter(|n| n.withdraws.is_none() && n.data["customer_event_id"] == json!(id(3)))
        .map(|n| n.id)
        .collect();
    assert_eq!(alerts_for_3.len(), 2, "{late:#?}");
    assert_eq!(alerts_for_3[0], unanswered_id("c1", 3));
    assert_ne!(
        alerts_for_3[1], alerts_for_3[0],
        "a new id for the alert sent again"
    );
}

#[test]
fn an_earlier_message_arriving_after_the_alert_corrects_it_and_alerts_for_the_true_start() {
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    feed(&mut e, &[received(2, "c1", t(20.0), Some(7), "")]);
    let first = e.advance_watermark(t(85.0));
    assert_eq!(notifications(&first)[0].id, unanswered_id("c1", 2));
    // The customer had written at 5 already: that wait's deadline (65) is past, so its alert
    // comes at once and the one for 20 is corrected.
    let outs = feed(&mut e, &[received(1, "c1", t(5.0), Some(7), "")]);
    let n = notifications(&outs);
    assert_eq!(n.len(), 2, "{n:#?}");
    assert_eq!(n[0].withdraws, Some(unanswered_id("c1", 2)));
    assert_eq!(n[0].data["state"], "corrected");
    assert_eq!(n[0].created_at, t(80.0), "dated like what it withdraws");
    assert_eq!(n[1].id, unanswered_id("c1", 1));
    assert_eq!(n[1].created_at, t(65.0));
    // In order, the same: one alert for the wait that started at 5.
    let mut in_order = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    let mut outs = feed(
        &mut in_order,
        &[
            received(1, "c1", t(5.0), Some(7), ""),
            received(2, "c1", t(20.0), Some(7), ""),
        ],
    );
    outs.extend(in_order.advance_watermark(t(85.0)));
    let mut late = first;
    late.extend(n.into_iter().cloned().map(Output::Notification));
    assert_eq!(net(&late), net(&outs));
    // The seller's unanswered gauge counts one conversation either way.
    let gauge = |e: &PartitionEngine| e.seller_metrics(TENANT)[0].conversations_unanswered;
    assert_eq!(gauge(&e), 1);
    assert_eq!(gauge(&in_order), 1);
}

#[test]
fn a_correction_updates_the_seller_metrics() {
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    feed(
        &mut e,
        &[
            received(2, "c1", t(20.0), Some(7), ""),
            sent(3, "c1", t(30.0), 7, false),
        ],
    );
    e.advance_watermark(t(40.0)); // the metrics are read at the watermark
    let before = &e.seller_metrics(TENANT)[0];
    assert_eq!(before.response_7d.count, 1);
    assert_eq!(before.response_7d.mean_seconds, Some(600.0));
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let after = &e.seller_metrics(TENANT)[0];
    assert_eq!(
        after.response_7d.count, 1,
        "the sample is replaced, not added"
    );
    assert_eq!(after.response_7d.mean_seconds, Some(1800.0));
    assert_eq!(after.waits_received, 1);
}

#[test]
fn a_duplicate_event_is_ignored() {
    let mut e = engine();
    let msg = received(1, "c1", t(0.0), Some(7), "");
    e.on_event(&msg);
    assert!(e.on_event(&msg).is_empty());
    assert_eq!(e.stats().duplicates, 1);
    assert_eq!(e.stats().applied, 1);
    let reply = sent(2, "c1", t(5.0), 7, false);
    assert_eq!(samples(&e.on_event(&reply)).len(), 1);
    assert!(e.on_event(&reply).is_empty());
    assert_eq!(e.stats().duplicates, 2);
}

#[test]
fn events_within_the_allowed_lateness_are_applied_older_ones_are_too_late() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(120.0), Some(7), "")]);
    // Exactly at the cutoff (newest - 1 h): applied.
    let outs = e.on_event(&received(2, "c2", t(60.0), Some(7), ""));
    assert!(outs.iter().all(|o| !matches!(o, Output::TooLate(_))));
    assert_eq!(e.stats().applied, 2);
    // Its deadline (120) is already behind the event-time watermark: the next event fires it.
    // A millisecond older than the cutoff: too late, not applied.
    let late = received(
        3,
        "c3",
        t(60.0) - chrono::Duration::milliseconds(1),
        Some(7),
        "",
    );
    let outs = e.on_event(&late);
    assert_eq!(
        outs,
        vec![Output::TooLate(TooLate {
            event_id: id(3),
            tenant_id: TENANT,
            occurred_at: late.occurred_at,
            cutoff: t(60.0),
        })]
    );
    assert_eq!(e.stats().too_late, 1);
    // A too-late event is not remembered as seen: it stays too late, not "duplicate".
    assert!(matches!(e.on_event(&late)[..], [Output::TooLate(_)]));
    // The lateness is per tenant.
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(600));
    feed(&mut e, &[received(1, "c1", t(120.0), Some(7), "")]);
    assert!(matches!(
        e.on_event(&received(2, "c2", t(100.0), None, ""))[..],
        [Output::TooLate(_)]
    ));
}

#[test]
fn a_late_customer_message_past_its_deadline_fires_at_once_by_event_time() {
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200));
    feed(&mut e, &[received(1, "c1", t(100.0), Some(7), "")]);
    // Deadline 30+60 = 90 is already behind the event-time watermark (100 - 1 s).
    let outs = e.on_event(&received(2, "c2", t(30.0), Some(7), ""));
    assert_eq!(notifications(&outs)[0].id, unanswered_id("c2", 2));
    assert_eq!(notifications(&outs)[0].created_at, t(90.0));
}

#[test]
fn duplicates_are_remembered_for_the_lateness_plus_a_margin_then_too_late() {
    let mut e = engine();
    let first = received(1, "c1", t(0.0), Some(7), "");
    e.on_event(&first);
    // 1 h 30 later: too late by lateness, but still recognised as a duplicate (margin).
    feed(&mut e, &[received(2, "c2", t(90.0), None, "")]);
    assert!(e.on_event(&first).is_empty());
    assert_eq!(e.stats().duplicates, 1);
    // 2 h 30 later the id is forgotten; the duplicate is too late, still not applied.
    feed(&mut e, &[received(3, "c3", t(150.0), None, "")]);
    assert!(matches!(e.on_event(&first)[..], [Output::TooLate(_)]));
    assert_eq!(e.stats().applied, 3);
}

#[test]
fn the_same_events_give_byte_identical_outputs() {
    let events = vec![
        received(1, "c1", t(0.0), Some(7), "¿precio?"),
        lead_created(
            2,
            "l1",
            t(1.0),
            LeadSource::MetaAds,
            Some(7),
            Some("c1"),
            None,
        ),
        sent(3, "c1", t(70.0), 7, false),
    ];
    let run = || {
        let mut e = engine();
        let mut outs = feed(&mut e, &events);
        outs.extend(e.advance_watermark(t(300.0)));
        serde_json::to_string(
            &outs
                .iter()
                .map(|o| match o {
                    Output::Notification(n) => serde_json::to_value(n).unwrap(),
                    Output::ResponseTime(r) => serde_json::to_value(r).unwrap(),
                    Output::LeadScore(l) => serde_json::to_value(l).unwrap(),
                    Output::SellerMetrics(m) => serde_json::to_value(m).unwrap(),
                    Output::TooLate(t) => json!(t.to_string()),
                    Output::OverLimit(r) => json!(r.to_string()),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let a = run();
    assert!(a.contains("unanswered_conversation"));
    assert_eq!(a, run());
}

// ---------------------------------------------------------------- hot leads

/// A REFERRAL lead (.25) on conversation c1 with seller 7.
fn referral_lead(n: u128, at: DateTime<Utc>) -> Event {
    lead_created(n, "l1", at, LeadSource::Referral, Some(7), Some("c1"), None)
}

fn hot(outs: &[Output]) -> Vec<&Notification> {
    of_kind(outs, NotificationType::HotLead)
}

#[test]
fn scores_are_emitted_on_each_relevant_event_with_their_components() {
    let mut e = engine_with(|c| c.defaults.high_value_locations = vec!["Lima".into()]);
    let outs = feed(
        &mut e,
        &[
            lead_created(
                1,
                "l1",
                t(0.0),
                LeadSource::MetaAds,
                Some(7),
                Some("c1"),
                Some("lima"),
            ),
            received(2, "c1", t(1.0), None, "¿Cuánto cuesta? ¿está disponible?"),
            status(3, "l1", t(100.0), LeadStatus::Contacted),
            received(4, "c2", t(101.0), None, "precio"), // another conversation: no rescore
        ],
    );
    let s = scores(&outs);
    assert_eq!(s.len(), 3);
    assert_eq!(
        s.iter().map(|x| x.cause_event_id).collect::<Vec<_>>(),
        vec![id(1), id(2), id(3)]
    );
    assert_eq!(
        s[0].id,
        derive_id("lead_score", &["42", "l1", &id(1).to_string()])
    );
    // created: source .30 + location .10
    assert_eq!(
        (s[0].score, s[0].source_score, s[0].location_score),
        (0.4, 0.3, 0.1)
    );
    // + recency .15 + intent 2 signals .20
    assert_eq!(s[1].score, 0.75);
    assert_eq!((s[1].recency_score, s[1].intent_score), (0.15, 0.2));
    assert_eq!(s[1].computed_at, t(1.0));
    // 99 minutes later the message is no longer recent.
    assert_eq!(s[2].score, 0.6);
    assert_eq!(s[2].seller_id, Some(7));
}

/// Six customer messages with two buying signals, the last at `at(5)`; REFERRAL .25 + .20 +
/// .15 + .20 = .80.
fn heat(first_id: u128, start: f64) -> Vec<Event> {
    (0..6)
        .map(|i| {
            let text = if i == 0 {
                "precio y cotización"
            } else {
                "hola"
            };
            received(first_id + i, "c1", t(start + i as f64), None, text)
        })
        .collect()
}

#[test]
fn crossing_the_threshold_notifies_the_seller_once() {
    let mut e = engine();
    let mut events = vec![referral_lead(1, t(0.0))];
    events.extend(heat(10, 1.0));
    let outs = feed(&mut e, &events);
    let h = hot(&outs);
    assert_eq!(h.len(), 1, "{:?}", scores(&outs));
    let n = h[0];
    assert_eq!(n.priority, Priority::Urgent);
    assert_eq!(n.audience, Audience::User { user_id: 7 });
    assert_eq!(
        n.id,
        derive_id("notification/hot_lead", &["42", "l1", &id(15).to_string()])
    );
    assert_eq!(n.created_at, t(6.0));
    assert_eq!(n.data["score"], json!(0.8));
    assert_eq!(n.data["lead_id"], json!("l1"));
    assert_eq!(n.title, "Lead caliente");
    assert_eq!(n.actions[0].action, "open_lead");
    // More messages keep it hot: no second notification.
    let outs = feed(&mut e, &[received(20, "c1", t(7.0), None, "")]);
    assert!(hot(&outs).is_empty());
}

#[test]
fn hysteresis_needs_a_fall_below_the_rearm_level() {
    // META_ADS .30 + engagement .20 + intent .25 (3 signals) + recency .15 = .90; without
    // recency .75: between .7 and .8, not re-armed.
    let mut e = engine();
    let mut events = vec![lead_created(
        1,
        "l1",
        t(0.0),
        LeadSource::MetaAds,
        Some(7),
        Some("c1"),
        None,
    )];
    events.extend((0..6).map(|i| {
        received(
            10 + i,
            "c1",
            t(1.0 + i as f64),
            None,
            if i == 0 {
                "precio cotización comprar"
            } else {
                ""
            },
        )
    }));
    let outs = feed(&mut e, &events);
    assert_eq!(hot(&outs).len(), 1);
    let outs = feed(&mut e, &[status(30, "l1", t(120.0), LeadStatus::Contacted)]);
    assert_eq!(scores(&outs)[0].score, 0.75);
    let outs = feed(&mut e, &[received(31, "c1", t(121.0), None, "")]);
    assert_eq!(scores(&outs)[0].score, 0.9);
    assert!(hot(&outs).is_empty(), "not re-armed above .7");

    // REFERRAL: .80 hot, without recency .65 < .7 re-arms, back to .80 notifies again.
    let mut e = engine();
    let mut events = vec![referral_lead(1, t(0.0))];
    events.extend(heat(10, 1.0));
    assert_eq!(hot(&feed(&mut e, &events)).len(), 1);
    let outs = feed(&mut e, &[status(30, "l1", t(120.0), LeadStatus::Contacted)]);
    assert_eq!(scores(&outs)[0].score, 0.65);
    let outs = feed(&mut e, &[received(31, "c1", t(121.0), None, "")]);
    let h = hot(&outs);
    assert_eq!(h.len(), 1);
    assert_eq!(
        h[0].id,
        derive_id("notification/hot_lead", &["42", "l1", &id(31).to_string()])
    );
}

#[test]
fn only_new_or_contacted_leads_are_notified() {
    let mut e = engine();
    let mut events = vec![
        referral_lead(1, t(0.0)),
        status(2, "l1", t(0.5), LeadStatus::Interested),
    ];
    events.extend(heat(10, 1.0));
    let outs = feed(&mut e, &events);
    assert!(hot(&outs).is_empty());
    assert_eq!(scores(&outs).last().unwrap().score, 0.8);
    // Back to contacted while still hot and armed: notifies then.
    let outs = feed(&mut e, &[status(3, "l1", t(7.0), LeadStatus::Contacted)]);
    assert_eq!(hot(&outs).len(), 1);
}

#[test]
fn a_seller_reply_within_the_no_contact_window_holds_the_notification() {
    let mut e = engine();
    let mut events = vec![referral_lead(1, t(0.0)), sent(2, "c1", t(0.5), 7, false)];
    events.extend(heat(10, 1.0));
    assert!(hot(&feed(&mut e, &events)).is_empty());
    // Automated replies are not contact.
    let mut e = engine();
    let mut events = vec![referral_lead(1, t(0.0)), sent(2, "c1", t(0.5), 7, true)];
    events.extend(heat(10, 1.0));
    assert_eq!(hot(&feed(&mut e, &events)).len(), 1);
    // A reply more than 2 h before does not hold it.
    let mut e = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(5 * 3600));
    let mut events = vec![sent(2, "c1", t(0.0), 7, false), referral_lead(1, t(120.5))];
    events.extend(heat(10, 121.0));
    assert_eq!(hot(&feed(&mut e, &events)).len(), 1);
}

#[test]
fn a_lead_without_seller_notifies_managers_and_unknown_leads_are_not_scored() {
    let mut e = engine();
    let mut events = vec![lead_created(
        1,
        "l1",
        t(0.0),
        LeadSource::Referral,
        None,
        Some("c1"),
        None,
    )];
    events.extend(heat(10, 1.0));
    let outs = feed(&mut e, &events);
    assert_eq!(
        hot(&outs)[0].audience,
        Audience::Role {
            role: Role::Manager
        }
    );
    let outs = feed(
        &mut e,
        &[status(2, "nobody", t(8.0), LeadStatus::Contacted)],
    );
    assert!(scores(&outs).is_empty());
}

#[test]
fn a_status_change_names_its_status_on_the_score_and_others_do_not() {
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            referral_lead(1, t(0.0)),
            received(2, "c1", t(1.0), None, "hola"),
            status(3, "l1", t(2.0), LeadStatus::Converted),
        ],
    );
    let changes: Vec<_> = scores(&outs).iter().map(|s| s.status_change).collect();
    assert_eq!(changes, vec![None, None, Some(LeadStatus::Converted)]);
}

#[test]
fn a_conversion_arriving_before_its_lead_is_scored_when_the_lead_arrives() {
    let events = [
        referral_lead(1, t(0.0)),
        status(2, "l1", t(10.0), LeadStatus::Negotiation),
        status(3, "l1", t(20.0), LeadStatus::Converted),
    ];
    let in_order = run_with_lateness(&events);
    for order in [[2, 1, 0], [1, 0, 2], [2, 0, 1]] {
        let shuffled: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
        let late = run_with_lateness(&shuffled);
        let net_late = net(&late);
        assert_eq!(net_late, net(&in_order), "order {order:?}");
        assert_eq!(net_late.status_changes.len(), 2);
        let conversion = scores(&late)
            .into_iter()
            .find(|s| s.status_change == Some(LeadStatus::Converted))
            .expect("the conversion is scored");
        assert_eq!(
            (conversion.seller_id, conversion.computed_at),
            (Some(7), t(20.0))
        );
        assert_eq!(conversion.cause_event_id, id(3));
        // Held changes are scored once, and the lead's status is still the newest one.
        let outs = feed(
            &mut engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(7200)),
            &shuffled,
        );
        assert_eq!(scores(&outs).len(), 3, "order {order:?}");
    }
}

#[test]
fn a_held_status_change_is_forgotten_once_its_lead_could_only_be_too_late() {
    let mut e = engine();
    feed(&mut e, &[status(1, "l1", t(0.0), LeadStatus::Converted)]);
    let held = |e: &PartitionEngine| e.tenants[&TENANT].leads.unscored_changes();
    assert_eq!(held(&e), 1);
    // Event time moves on to just inside the allowed lateness (1 h): still held.
    feed(&mut e, &[received(2, "c9", t(59.0), None, "hola")]);
    assert_eq!(held(&e), 1);
    // Past it (and past the next pruning): a lead.created older than the change is refused.
    feed(&mut e, &[received(3, "c9", t(62.0), None, "hola")]);
    assert_eq!(held(&e), 0);
    let outs = feed(&mut e, &[referral_lead(4, t(-1.0))]);
    assert!(scores(&outs).is_empty());
    assert!(outs.iter().any(|o| matches!(o, Output::TooLate(_))));
}

// ---------------------------------------------------------------- follow-up reminders

#[test]
fn follow_up_reminds_a_day_before_and_at_due_time_for_interested_leads() {
    let mut e = engine();
    let due = t(3.0 * 24.0 * 60.0);
    feed(
        &mut e,
        &[
            referral_lead(1, t(0.0)),
            status(2, "l1", t(1.0), LeadStatus::Interested),
            follow_up(3, "l1", t(2.0), 7, due),
        ],
    );
    let before = due - chrono::Duration::hours(24);
    assert_eq!(next_rule_deadline(&e), Some(before));
    let outs = e.advance_watermark(before);
    let n = of_kind(&outs, NotificationType::FollowUpReminder);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].priority, Priority::Medium);
    assert_eq!(n[0].audience, Audience::User { user_id: 7 });
    assert_eq!(n[0].created_at, before);
    assert_eq!(n[0].data["stage"], json!("before"));
    assert_eq!(n[0].message, "Seguimiento con Ana en 1 d");
    let outs = e.advance_watermark(due);
    let n = of_kind(&outs, NotificationType::FollowUpReminder);
    assert_eq!(n[0].data["stage"], json!("due"));
    assert_ne!(n[0].id, derive_id("x", &[]));
}

#[test]
fn follow_up_is_skipped_for_other_statuses_and_replaced_by_a_newer_schedule() {
    let mut e = engine();
    let due = t(3.0 * 24.0 * 60.0);
    feed(
        &mut e,
        &[
            referral_lead(1, t(0.0)),
            status(2, "l1", t(1.0), LeadStatus::Negotiation),
            follow_up(3, "l1", t(2.0), 7, due),
            // Rescheduled to a day later, with less than 24 h... no: 4 days ahead.
            follow_up(4, "l1", t(3.0), 7, due + chrono::Duration::hours(24)),
        ],
    );
    let outs = e.advance_watermark(due);
    let n = of_kind(&outs, NotificationType::FollowUpReminder);
    assert_eq!(n.len(), 1, "only the new schedule's 'before' reminder");
    assert_eq!(n[0].data["schedule_event_id"], json!(id(4)));
    // Converted before the due time: no reminder.
    feed(&mut e, &[status(5, "l1", due, LeadStatus::Converted)]);
    assert!(without_reports(e.advance_watermark(due + chrono::Duration::hours(25))).is_empty());
}

// ---------------------------------------------------------------- session timeout

#[test]
fn a_session_without_heartbeat_returns_to_the_queue() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            session(1, "started", "s1", t(0.0)),
            session(2, "heartbeat", "s1", t(5.0)),
        ],
    );
    assert_eq!(next_rule_deadline(&e), Some(t(15.0)));
    assert!(e.advance_watermark(t(14.99)).is_empty());
    let outs = e.advance_watermark(t(15.0));
    let n = of_kind(&outs, NotificationType::SessionTimeout);
    assert_eq!(n.len(), 1);
    assert_eq!(
        n[0].audience,
        Audience::Role {
            role: Role::Supervisor
        }
    );
    assert_eq!(n[0].priority, Priority::High);
    assert_eq!(n[0].created_at, t(15.0));
    assert_eq!(n[0].data["client_id"], json!("client-9"));
    // A late heartbeat from before the deadline withdraws it and restarts the clock.
    let outs = feed(&mut e, &[session(3, "heartbeat", "s1", t(14.0))]);
    let w = of_kind(&outs, NotificationType::SessionTimeout);
    assert_eq!(w[0].withdraws, Some(n[0].id));
    assert_eq!(next_rule_deadline(&e), Some(t(24.0)));
    // Ended: nothing more.
    feed(&mut e, &[session(4, "ended", "s1", t(20.0))]);
    assert_eq!(next_rule_deadline(&e), None);
    assert!(e.advance_watermark(t(100.0)).is_empty());
    // Heartbeats older than the end are ignored.
    assert!(feed(&mut e, &[session(5, "heartbeat", "s1", t(19.0))]).is_empty());
    assert_eq!(next_rule_deadline(&e), None);
}

// ---------------------------------------------------------------- order independence

/// A small deterministic PRNG (xorshift64*), so the test needs no dependency and is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A day of traffic for two tenants: conversations with customer messages, replies (some after
/// the deadline, some automated), closes and reassignments, leads with statuses and follow-ups,
/// sessions with heartbeats. Within one conversation (and its lead) consecutive events are at
/// least `min_gap` apart, except a customer message and the reply right after it.
fn workload(rng: &mut Rng, min_gap_s: i64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut n: u128 = 1000;
    let mut next_id = || {
        n += 1;
        n
    };
    let base = origin();
    let secs = |s: i64| base + chrono::Duration::seconds(s);
    for tenant in [42u64, 77] {
        for c in 0..12 {
            let conv = format!("c{c}");
            let lead = format!("l{c}");
            let seller = 100 + rng.below(4);
            let mut now = rng.below(3600) as i64;
            let mut evs = vec![lead_created(
                next_id(),
                &lead,
                secs(now),
                [
                    LeadSource::MetaAds,
                    LeadSource::Referral,
                    LeadSource::Website,
                ][c % 3],
                Some(seller),
                Some(&conv),
                None,
            )];
            for _ in 0..(3 + rng.below(5)) {
                now += min_gap_s + rng.below(1800) as i64;
                let wait_start = now;
                let words = [
                    "hola",
                    "precio",
                    "cotización y comprar",
                    "¿disponible?",
                    "ok",
                ];
                let mut last_message = now;
                for _ in 0..(1 + rng.below(3)) {
                    last_message = now;
                    evs.push(received(
                        next_id(),
                        &conv,
                        secs(now),
                        Some(seller),
                        words[rng.below(5) as usize],
                    ));
                    now += min_gap_s + rng.below(300) as i64;
                }
                // The reply: quick (may be reordered with the message), late, absent or closing.
                // The deadline is wait_start + 3600 s; other events near it may overtake the
                // reply by up to the window.
                let near_deadline = wait_start + 3600 - 12 + rng.below(24) as i64;
                match rng.below(8) {
                    0 => {
                        let quick = secs(last_message + rng.below(25) as i64);
                        evs.push(sent(next_id(), &conv, quick, seller, false))
                    }
                    1 => evs.push(sent(next_id(), &conv, secs(now + 5400), seller, false)),
                    2 => evs.push(sent(next_id(), &conv, secs(now), seller, true)),
                    3 => evs.push(closed(next_id(), &conv, secs(near_deadline))),
                    4 => evs.push(assigned(next_id(), &conv, secs(now), 100 + rng.below(4))),
                    5 | 6 => evs.push(sent(next_id(), &conv, secs(near_deadline), seller, false)),
                    _ => evs.push(sent(next_id(), &conv, secs(now + 600), seller, false)),
                }
                now += 5400 + min_gap_s + rng.below(600) as i64;
                if rng.below(3) == 0 {
                    let s = [
                        LeadStatus::Contacted,
                        LeadStatus::Interested,
                        LeadStatus::Negotiation,
                    ][rng.below(3) as usize];
                    evs.push(status(next_id(), &lead, secs(now), s));
                    now += min_gap_s;
                }
                if rng.below(4) == 0 {
                    let due = secs(now + 30 * 3600);
                    evs.push(follow_up(next_id(), &lead, secs(now), seller, due));
                    now += min_gap_s;
                }
            }
            for e in &mut evs {
                e.tenant_id = tenant;
            }
            events.extend(evs);
        }
        // A busy conversation: an event every 25-45 s keeps event time moving for everyone.
        let mut now = 0;
        let mut busy = Vec::new();
        while now < 40 * 3600 {
            busy.push(received(next_id(), "busy", secs(now), Some(1), "hola"));
            now += min_gap_s + 4 + rng.below(20) as i64;
        }
        for e in &mut busy {
            e.tenant_id = tenant;
        }
        events.extend(busy);
        for s in 0..3 {
            let sid = format!("s{s}");
            let mut now = rng.below(3600) as i64;
            let mut evs = vec![session(next_id(), "started", &sid, secs(now))];
            for _ in 0..(2 + rng.below(6)) {
                now += min_gap_s + rng.below(900) as i64; // sometimes over the 600 s timeout
                evs.push(session(next_id(), "heartbeat", &sid, secs(now)));
            }
            if rng.below(2) == 0 {
                now += min_gap_s + rng.below(300) as i64;
                evs.push(session(next_id(), "ended", &sid, secs(now)));
            }
            for e in &mut evs {
                e.tenant_id = tenant;
            }
            events.extend(evs);
        }
    }
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
    events
}

/// Runs `events` in the given order, advancing no clock until the end, then one far watermark.
fn outputs_by_id(events: &[Event], delay: Duration) -> Vec<(Uuid, String)> {
    let mut e = engine_with(|c| c.watermark_delay = delay);
    let mut outs = feed(&mut e, events);
    let end = events.iter().map(|e| e.occurred_at).max().unwrap() + chrono::Duration::days(5);
    outs.extend(e.advance_watermark(end));
    assert!(
        outs.iter().all(|o| !matches!(o, Output::TooLate(_))),
        "everything is within lateness"
    );
    // Seller-metrics snapshots and performance alerts are evaluated at minute changes of the
    // event-time watermark over what has arrived so far: they follow arrival order by design.
    let mut v: Vec<(Uuid, String)> = outs
        .iter()
        .filter_map(|o| {
            let body = match o {
                Output::Notification(n) if n.kind == NotificationType::PerformanceAlert => {
                    return None
                }
                Output::SellerMetrics(_) => return None,
                Output::Notification(n) => serde_json::to_string(n).unwrap(),
                Output::ResponseTime(r) => serde_json::to_string(r).unwrap(),
                Output::LeadScore(l) => serde_json::to_string(l).unwrap(),
                Output::TooLate(t) => t.to_string(),
                Output::OverLimit(r) => r.to_string(),
            };
            Some((o.id().unwrap(), body))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn shuffling_within_a_bounded_window_gives_the_same_outputs() {
    let window_s: i64 = 20;
    let delay = Duration::from_secs(30); // > window: nothing fires before what precedes it
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let events = workload(&mut rng, window_s + 1);
        let reference = outputs_by_id(&events, delay);
        let kinds = |v: &[(Uuid, String)], k: &str| v.iter().filter(|(_, b)| b.contains(k)).count();
        assert!(kinds(&reference, "unanswered_conversation") > 0);
        assert!(kinds(&reference, "\"withdraws\"") > 0);
        assert!(kinds(&reference, "response_seconds") > 0);
        assert!(kinds(&reference, "hot_lead") > 0 || seed > 1);
        assert!(kinds(&reference, "session_timeout") > 0);

        // Displace every event by up to `window_s` seconds of arrival order.
        let mut keyed: Vec<(DateTime<Utc>, u64, Event)> = events
            .iter()
            .map(|e| {
                let jitter =
                    chrono::Duration::milliseconds(rng.below(window_s as u64 * 1000) as i64);
                (e.occurred_at + jitter, rng.next(), e.clone())
            })
            .collect();
        keyed.sort_by_key(|(k, tie, _)| (*k, *tie));
        let shuffled: Vec<Event> = keyed.into_iter().map(|(_, _, e)| e).collect();
        assert_ne!(
            shuffled.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "the shuffle reorders something"
        );
        let got = outputs_by_id(&shuffled, delay);
        assert_eq!(got.len(), reference.len(), "seed {seed}");
        for (a, b) in got.iter().zip(&reference) {
            assert_eq!(a, b, "seed {seed}");
        }
    }
}

#[test]
fn deadlines_are_kept_only_while_pending() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(1.0), 7, false),
            received(3, "c2", t(2.0), Some(7), ""),
        ],
    );
    let tenant = &e.tenants[&TENANT];
    assert_eq!(rule_deadlines(tenant), 1);
}

// ---------------------------------------------------------------- seller metrics

fn snapshots(outs: &[Output]) -> Vec<&SellerMetrics> {
    outs.iter()
        .filter_map(|o| match o {
            Output::SellerMetrics(m) => Some(m.as_ref()),
            _ => None,
        })
        .collect()
}

fn snapshot_of(outs: &[Output], seller: u64, at: DateTime<Utc>) -> SellerMetrics {
    snapshots(outs)
        .into_iter()
        .find(|m| m.seller_id == seller && m.snapshot_at == at)
        .unwrap_or_else(|| panic!("no snapshot of seller {seller} at {at}"))
        .clone()
}

/// An event that only moves event time (a user that is not a seller).
fn tick_event(n: u128, at: DateTime<Utc>) -> Event {
    ev(
        n,
        at,
        Payload::UserUpserted(UserUpserted {
            user_id: 999,
            name: "Gerente".into(),
            role: Role::Manager,
            time_zone: None,
            active: None,
        }),
    )
}

/// With the 1 s watermark delay: an event at `b + 1s` moves the watermark exactly to `b`.
fn at_watermark(n: u128, b: DateTime<Utc>) -> Event {
    tick_event(n, b + chrono::Duration::seconds(1))
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn percentiles_use_the_nearest_rank_on_known_data() {
    let s = sellers::stats((1..=10).rev().map(f64::from).collect());
    assert_eq!(s.count, 10);
    assert_eq!(s.mean_seconds, Some(5.5));
    assert_eq!((s.p50_seconds, s.p90_seconds), (Some(5.0), Some(9.0)));
    assert_eq!(s.max_seconds, Some(10.0));
    let s = sellers::stats(vec![4.0, 1.0, 3.0, 2.0]);
    assert_eq!((s.p50_seconds, s.p90_seconds), (Some(2.0), Some(4.0)));
    let s = sellers::stats(vec![7.0]);
    assert_eq!(
        (s.p50_seconds, s.p90_seconds, s.max_seconds),
        (Some(7.0), Some(7.0), Some(7.0))
    );
    assert_eq!(sellers::stats(vec![]), ResponseTimeStats::default());
}

#[test]
fn the_1h_window_excludes_a_sample_exactly_one_hour_old() {
    let mut e = engine();
    let outs = feed_all(
        &mut e,
        &[
            received(1, "c1", t(0.0), Some(7), ""),
            sent(2, "c1", t(1.0), 7, false), // 60 s, at t(1)
            received(3, "c1", t(2.0), Some(7), ""),
            sent(4, "c1", t(4.0), 7, false), // 120 s, at t(4)
            at_watermark(5, t(60.0)),
            at_watermark(6, t(61.0)),
            at_watermark(7, t(64.0)),
        ],
    );
    let at60 = snapshot_of(&outs, 7, t(60.0));
    assert_eq!(at60.response_1h.count, 2);
    assert_eq!(at60.response_1h.mean_seconds, Some(90.0));
    let at61 = snapshot_of(&outs, 7, t(61.0));
    assert_eq!(
        at61.response_1h.count, 1,
        "the sample at t(1) is exactly 1 h old"
    );
    assert_eq!(at61.response_1h.max_seconds, Some(120.0));
    assert_eq!(at61.response_7d.count, 2);
    assert_eq!(at61.response_today.count, 2);
    let at64 = snapshot_of(&outs, 7, t(64.0));
    assert_eq!(at64.response_1h.count, 0);
    assert_eq!(at64.response_1h.mean_seconds, None);
    assert_eq!(at64.id, sellers::snapshot_id(TENANT, 7, t(64.0)));
    // Conversation figures of the same snapshot.
    assert_eq!(
        (
            at64.conversations_total,
            at64.conversations_active,
            at64.conversations_today
        ),
        (1, 1, 1)
    );
    assert_eq!(at64.total_chat_seconds, 240.0);
    assert_eq!((at64.waits_received, at64.waits_answered), (2, 2));
    assert_eq!(at64.engagement_rate, Some(1.0));
}

#[test]
fn day_start_follows_the_tenant_zone_through_dst_changes() {
    use chrono::{NaiveDate, TimeZone};
    let madrid: chrono_tz::Tz = "Europe/Madrid".parse().unwrap();
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    // Spring forward on 2026-03-29 (02:00 CET -> 03:00 CEST): a 23 h day.
    assert_eq!(
        sellers::day_start(madrid, day(2026, 3, 29)),
        utc("2026-03-28T23:00:00Z")
    );
    assert_eq!(
        sellers::day_start(madrid, day(2026, 3, 30)),
        utc("2026-03-29T22:00:00Z")
    );
    // Chile springs forward at local midnight: 2026-09-06 00:00 does not exist there.
    let santiago: chrono_tz::Tz = "America/Santiago".parse().unwrap();
    let midnight = day(2026, 9, 6).and_hms_opt(0, 0, 0).unwrap();
    assert!(
        santiago.from_local_datetime(&midnight).earliest().is_none(),
        "a gap at midnight"
    );
    let start = sellers::day_start(santiago, day(2026, 9, 6));
    assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    assert_eq!(
        start.with_timezone(&santiago).to_string(),
        "2026-09-06 01:00:00 -03"
    );
    assert_eq!(
        sellers::day_start(santiago, day(2026, 9, 5)),
        utc("2026-09-05T04:00:00Z")
    );
}

#[test]
fn today_is_the_local_day_on_a_dst_change_day() {
    let mut e = engine_with(|c| c.defaults.time_zone = "Europe/Madrid".into());
    let reply_after = |n: u128, conv: &str, replied: &str| {
        let r = utc(replied);
        vec![
            received(n, conv, r - chrono::Duration::seconds(30), Some(7), ""),
            sent(n + 1, conv, r, 7, false),
        ]
    };
    let mut events = Vec::new();
    events.extend(reply_after(1, "a", "2026-03-28T22:59:59Z")); // 23:59:59 on the 28th
    events.extend(reply_after(3, "b", "2026-03-28T23:00:00Z")); // 00:00:00 on the 29th
    events.push(at_watermark(5, utc("2026-03-28T23:30:00Z")));
    events.extend(reply_after(6, "c", "2026-03-29T21:59:59Z")); // 23:59:59 CEST on the 29th
    events.extend(reply_after(8, "d", "2026-03-29T22:00:00Z")); // 00:00 on the 30th
    events.push(at_watermark(10, utc("2026-03-29T22:00:00Z")));
    let outs = feed_all(&mut e, &events);
    let first = snapshot_of(&outs, 7, utc("2026-03-28T23:30:00Z"));
    assert_eq!(first.day.to_string(), "2026-03-29");
    assert_eq!(first.time_zone, "Europe/Madrid");
    assert_eq!(first.response_today.count, 1);
    assert_eq!(first.response_1h.count, 2);
    let next = snapshot_of(&outs, 7, utc("2026-03-29T22:00:00Z"));
    assert_eq!(next.day.to_string(), "2026-03-30", "the 29th lasted 23 h");
    assert_eq!(
        next.response_today.count, 1,
        "only the reply at local midnight"
    );
    assert_eq!(next.response_7d.count, 4);
    assert_eq!(next.conversations_today, 1);
}

#[test]
fn productivity_score_formula() {
    let th = Thresholds::default(); // response_target 5 min
    let rt = |mean: f64| sellers::stats(vec![mean]);
    assert_eq!(
        sellers::productivity(&th, &rt(150.0), Some(1.0), Some(0.25), 50),
        10.0
    );
    // Twice the target: half the speed marks.
    let expected = 10.0 * (0.35 * 0.5 + 0.25 + 0.25 + 0.15);
    assert_eq!(
        sellers::productivity(&th, &rt(600.0), Some(1.0), Some(0.5), 80),
        expected
    );
    // No leads: the other components are renormalised.
    let expected = ((10.0 * (0.35 + 0.25 * 0.5 + 0.15 * 0.2) / 0.75) * 100.0_f64).round() / 100.0;
    assert_eq!(
        sellers::productivity(&th, &rt(10.0), Some(0.5), None, 10),
        expected
    );
    // Nothing at all.
    assert_eq!(
        sellers::productivity(&th, &ResponseTimeStats::default(), None, None, 0),
        0.0
    );
}

#[test]
fn rank_orders_by_score_and_breaks_ties_by_seller_id() {
    let mut e = engine();
    let mut events = Vec::new();
    // Sellers 9 and 3 answer in 10 min, seller 5 in 1 min, seller 8 never answers.
    for (i, (seller, wait)) in [(9u64, 10.0), (3, 10.0), (5, 1.0), (8, 200.0)]
        .iter()
        .enumerate()
    {
        let n = 10 * i as u128;
        let conv = format!("c{seller}");
        events.push(received(n + 1, &conv, t(0.0), Some(*seller), ""));
        if *wait < 100.0 {
            events.push(sent(n + 2, &conv, t(*wait), *seller, false));
        }
    }
    events.push(at_watermark(100, t(90.0)));
    feed_all(&mut e, &events);
    let ranked = e.seller_metrics(TENANT);
    let order: Vec<(u64, u32)> = ranked.iter().map(|m| (m.seller_id, m.rank)).collect();
    assert_eq!(order, vec![(5, 1), (3, 2), (9, 3), (8, 4)]);
    assert_eq!(ranked[1].productivity_score, ranked[2].productivity_score);
    assert!(ranked[0].productivity_score > ranked[1].productivity_score);
    assert!(ranked.iter().all(|m| m.sellers_ranked == 4));
    let eight = &ranked[3];
    assert_eq!(eight.conversations_unanswered, 1);
    assert_eq!((eight.waits_received, eight.waits_answered), (1, 0));
    assert_eq!(eight.productivity_score, 0.0);
    // The non-seller user used as a clock is not ranked.
    assert!(ranked.iter().all(|m| m.seller_id != 999));
}

fn alerts(outs: &[Output]) -> Vec<&Notification> {
    of_kind(outs, NotificationType::PerformanceAlert)
}

#[test]
fn a_performance_alert_fires_once_per_day_per_condition_and_again_the_next_day() {
    let mut e = engine_with(|c| c.defaults.alert_unanswered = 1);
    let mut events = vec![
        // 40 min to reply (> 30 min) on day 1.
        received(1, "slow", t(0.0), Some(7), ""),
        sent(2, "slow", t(40.0), 7, false),
        // Two customers waiting more than 1 h (> 1 unanswered).
        received(3, "w1", t(41.0), Some(7), ""),
        received(4, "w2", t(41.0), Some(7), ""),
        at_watermark(5, t(50.0)),
    ];
    let outs = feed_all(&mut e, &events);
    let first = alerts(&outs);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].data["condition"], "slow_response");
    assert_eq!(first[0].audience, Audience::Role { role: Role::Ceo });
    assert_eq!(first[0].priority, Priority::Medium);
    // Evaluated when the watermark entered the minute of the reply.
    assert_eq!(first[0].created_at, t(40.0));
    assert_eq!(first[0].title, "Alerta de rendimiento: respuestas lentas");
    assert_eq!(
        first[0].id,
        derive_id(
            "notification/performance_alert",
            &["42", "7", "2026-03-02", "slow_response"]
        )
    );
    // Later the same day: both waits overdue (deadline t(101)); slow response already alerted.
    events = vec![
        received(6, "slow", t(200.0), Some(7), ""),
        sent(7, "slow", t(250.0), 7, false),
        at_watermark(8, t(260.0)),
        at_watermark(9, t(300.0)),
    ];
    let outs = feed_all(&mut e, &events);
    let later = alerts(&outs);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].data["condition"], "unanswered");
    assert_eq!(later[0].data["value"], 2);
    assert_eq!(snapshot_of(&outs, 7, t(260.0)).conversations_unanswered, 2);
    // The next day (UTC): both conditions still hold once evaluated, so both fire again.
    let next_day = utc("2026-03-03T08:00:00Z");
    let outs = feed_all(
        &mut e,
        &[
            received(10, "slow", next_day, Some(7), ""),
            sent(
                11,
                "slow",
                next_day + chrono::Duration::minutes(45),
                7,
                false,
            ),
            at_watermark(12, next_day + chrono::Duration::minutes(46)),
            at_watermark(13, next_day + chrono::Duration::minutes(47)),
        ],
    );
    let mut conditions: Vec<String> = alerts(&outs)
        .iter()
        .map(|n| format!("{}@{}", n.data["condition"], n.data["day"]))
        .collect();
    conditions.sort();
    assert_eq!(
        conditions,
        vec![
            "\"slow_response\"@\"2026-03-03\"",
            "\"unanswered\"@\"2026-03-03\""
        ]
    );
}

#[test]
fn low_conversion_alerts_only_with_more_than_the_minimum_of_leads() {
    let mut e = engine_with(|c| {
        c.defaults.alert_conversion_min_leads = 2;
        c.defaults.language = crate::texts::Language::En;
    });
    let lead = |n: u128, id: &str, at: f64| {
        lead_created(n, id, t(at), LeadSource::Website, Some(4), None, None)
    };
    let outs = feed_all(
        &mut e,
        &[
            lead(1, "l1", 0.0),
            lead(2, "l2", 1.0),
            at_watermark(3, t(5.0)),
        ],
    );
    assert!(alerts(&outs).is_empty(), "2 leads are not more than 2");
    let outs = feed_all(&mut e, &[lead(4, "l3", 6.0), at_watermark(5, t(8.0))]);
    let a = alerts(&outs);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].data["condition"], "low_conversion");
    assert_eq!(a[0].message, "#4 converts 0% of their 3 leads");
    let m = snapshot_of(&outs, 4, t(8.0));
    assert_eq!((m.leads_generated, m.leads_converted), (3, 0));
    assert_eq!(m.conversion_rate, Some(0.0));
    // Converting one lead (1/3 > 0.10) changes the snapshot, and no new alert.
    let outs = feed_all(
        &mut e,
        &[
            status(6, "l1", t(9.0), LeadStatus::Converted),
            at_watermark(7, t(10.0)),
        ],
    );
    assert!(alerts(&outs).is_empty());
    let m = snapshot_of(&outs, 4, t(10.0));
    assert_eq!(m.leads_converted, 1);
}

#[test]
fn snapshots_are_emitted_for_changed_sellers_and_identical_on_replay() {
    let events = vec![
        received(1, "c1", t(0.0), Some(7), "hola"),
        sent(2, "c1", t(10.0), 7, false), // 10 min: half the speed marks
        received(3, "c2", t(11.0), Some(8), ""),
        at_watermark(4, t(12.0)),
        sent(5, "c2", t(12.5), 8, false), // 90 s: full speed marks, so 8 overtakes 7
        at_watermark(6, t(13.0)),
        at_watermark(7, t(14.0)),
    ];
    let run = || {
        let mut e = engine();
        let outs = feed_all(&mut e, &events);
        snapshots(&outs)
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let mut e = engine();
    let outs = feed_all(&mut e, &events);
    let at = |b: f64| {
        snapshots(&outs)
            .iter()
            .filter(|m| m.snapshot_at == t(b))
            .map(|m| m.seller_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(12.0), vec![7, 8]);
    // Seller 8's reply changes 8 and the ranks, hence 7 too; at t(14) nothing changed: no
    // snapshot.
    assert_eq!(at(13.0), vec![8, 7]);
    assert!(at(14.0).is_empty());
    assert!(
        at(11.0).is_empty(),
        "no new figures between t(10) and t(11)"
    );
    // The live view agrees with the last snapshots but for time and id.
    let live = e.seller_metrics(TENANT);
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].snapshot_at, t(14.0));
    assert_eq!((live[0].seller_id, live[0].rank), (8, 1));
}

// ---------------------------------------------------------------- daily report

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn for_tenant(tenant: u64, mut e: Event) -> Event {
    e.tenant_id = tenant;
    e
}

/// Tenant 1 in Bogotá (UTC−5), tenant 2 in Madrid (UTC+1 in early March, UTC+2 from 29 March).
fn two_zone_engine() -> PartitionEngine {
    engine_with(|c| {
        for (tenant, zone) in [(1, "America/Bogota"), (2, "Europe/Madrid")] {
            c.tenants.insert(
                tenant,
                crate::config::ThresholdOverrides {
                    time_zone: Some(zone.into()),
                    ..Default::default()
                },
            );
        }
    })
}

/// 2 March, local afternoon in both zones: tenant 1 has two answered waits (60 s and 180 s),
/// one unanswered conversation and a lead converted; tenant 2 one answered wait (30 s).
fn report_day_events() -> Vec<Event> {
    let b = |n, e| for_tenant(1, ev_n(n, e));
    let m = |n, e| for_tenant(2, ev_n(n, e));
    vec![
        m(
            1,
            received(0, "m1", at("2026-03-02T14:00:00Z"), Some(8), "hola"),
        ),
        m(2, sent(0, "m1", at("2026-03-02T14:00:30Z"), 8, false)),
        b(
            3,
            received(0, "b1", at("2026-03-02T15:00:00Z"), Some(7), "hola"),
        ),
        b(4, sent(0, "b1", at("2026-03-02T15:01:00Z"), 7, false)),
        b(
            5,
            received(0, "b2", at("2026-03-02T15:10:00Z"), Some(7), "precio?"),
        ),
        b(6, sent(0, "b2", at("2026-03-02T15:13:00Z"), 7, false)),
        b(
            7,
            received(
                0,
                "b3",
                at("2026-03-02T16:00:00Z"),
                Some(7),
                "¿hay alguien?",
            ),
        ),
        b(
            8,
            lead_created(
                0,
                "l1",
                at("2026-03-02T16:05:00Z"),
                LeadSource::MetaAds,
                Some(7),
                None,
                None,
            ),
        ),
        b(
            9,
            status(0, "l1", at("2026-03-02T18:00:00Z"), LeadStatus::Converted),
        ),
    ]
}

fn ev_n(n: u128, mut e: Event) -> Event {
    e.event_id = id(1000 + n);
    e
}

fn reports(outs: &[Output]) -> Vec<Notification> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Notification(n) if n.kind == NotificationType::DailyReport => Some(n.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_daily_report_comes_at_0800_in_each_tenants_zone_once_with_yesterdays_totals() {
    let mut e = two_zone_engine();
    let mut outs = feed_all(&mut e, &report_day_events());
    // The unanswered alert of b3 (deadline 17:00Z) fires on the idle stream.
    outs.extend(e.advance_watermark(at("2026-03-02T20:00:00Z")));
    assert!(reports(&outs).is_empty(), "no report on the day itself");
    // 08:00 in Madrid is 07:00Z: tenant 2's report, not tenant 1's.
    assert!(reports(&e.advance_watermark(at("2026-03-03T06:59:59Z"))).is_empty());
    let madrid = reports(&e.advance_watermark(at("2026-03-03T07:00:00Z")));
    assert_eq!(madrid.len(), 1);
    assert_eq!(madrid[0].tenant_id, 2);
    assert_eq!(madrid[0].created_at, at("2026-03-03T07:00:00Z"));
    assert!(reports(&e.advance_watermark(at("2026-03-03T12:59:59Z"))).is_empty());
    // 08:00 in Bogotá is 13:00Z.
    let bogota = reports(&e.advance_watermark(at("2026-03-03T13:00:00Z")));
    assert_eq!(bogota.len(), 1);
    let r = &bogota[0];
    assert_eq!((r.tenant_id, r.created_at), (1, at("2026-03-03T13:00:00Z")));
    assert_eq!(r.audience, Audience::Role { role: Role::Ceo });
    assert_eq!(r.priority, Priority::Low);
    assert_eq!(r.title, "Informe diario del 2026-03-02");
    let d = &r.data;
    assert_eq!(d["day"], "2026-03-02");
    assert_eq!(d["time_zone"], "America/Bogota");
    let team = &d["team"];
    assert_eq!(team["conversations"], 3);
    assert_eq!(
        (team["messages_in"].as_u64(), team["messages_out"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(team["waits_answered"], 2);
    assert_eq!(
        team["waits_received"], 2,
        "waits that ended that day; the open one is in the alerts"
    );
    assert_eq!(team["response"]["count"], 2);
    assert_eq!(team["response"]["mean_seconds"], 120.0);
    assert_eq!(team["response"]["max_seconds"], 180.0);
    assert_eq!(
        (
            team["leads_generated"].as_u64(),
            team["leads_converted"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(d["top_performers"][0]["seller_id"], 7);
    assert_eq!(d["alerts"]["unanswered_conversation"], 1);
    let m = &madrid[0].data;
    assert_eq!(m["team"]["response"]["mean_seconds"], 30.0);
    assert_eq!(m["alerts"], json!({}));
    // Exactly once: nothing more; the 3rd was a day without activity, so no report about it.
    assert!(reports(&e.advance_watermark(at("2026-03-10T13:00:00Z"))).is_empty());
    // Activity on the 10th: reported on the 11th, with another id.
    feed_all(
        &mut e,
        &[for_tenant(
            2,
            ev_n(
                50,
                received(0, "m9", at("2026-03-10T14:00:00Z"), Some(8), "hola"),
            ),
        )],
    );
    let next = reports(&e.advance_watermark(at("2026-03-11T07:00:00Z")));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].data["day"], "2026-03-10");
    assert_ne!(next[0].id, madrid[0].id);
}

#[test]
fn a_restart_around_0800_rebuilds_the_same_report_with_the_same_id() {
    let run = |stops: &[&str]| -> Notification {
        // A restart replays the partition from the start into a fresh engine.
        let mut last = None;
        for stop in stops {
            let mut e = two_zone_engine();
            let mut outs = feed_all(&mut e, &report_day_events());
            outs.extend(e.advance_watermark(at("2026-03-02T20:00:00Z")));
            outs.extend(e.advance_watermark(at(stop)));
            last = reports(&outs)
                .into_iter()
                .find(|n| n.tenant_id == 1)
                .or(last);
        }
        last.expect("a report")
    };
    let straight = run(&["2026-03-03T14:00:00Z"]);
    let crashed_before = run(&["2026-03-03T12:59:00Z", "2026-03-03T14:00:00Z"]);
    let crashed_after = run(&["2026-03-03T13:00:30Z", "2026-03-03T14:00:00Z"]);
    let bytes = |n: &Notification| serde_json::to_vec(n).unwrap();
    assert_eq!(bytes(&crashed_before), bytes(&straight));
    assert_eq!(
        bytes(&crashed_after),
        bytes(&straight),
        "same id: stored once downstream"
    );
}

#[test]
fn on_dst_days_0800_and_yesterday_follow_the_local_clock() {
    // Madrid springs forward on 29 March 2026 (02:00 → 03:00): that day has 23 hours.
    let mut e = two_zone_engine();
    let m = |n, e| for_tenant(2, ev_n(n, e));
    feed_all(
        &mut e,
        &[
            // 00:30 local on the 29th (UTC+1): in the 29th's report.
            m(
                1,
                received(0, "x", at("2026-03-28T23:30:00Z"), Some(8), "hola"),
            ),
            // 23:30 local on the 29th (UTC+2).
            m(
                2,
                received(0, "y", at("2026-03-29T21:30:00Z"), Some(8), "hola"),
            ),
            // 00:30 local on the 30th: not in the 29th's report.
            m(
                3,
                received(0, "z", at("2026-03-29T22:30:00Z"), Some(8), "hola"),
            ),
        ],
    );
    // 08:00 CEST on the 30th is 06:00Z.
    assert!(reports(&e.advance_watermark(at("2026-03-30T05:59:59Z")))
        .iter()
        .all(|r| r.data["day"] != "2026-03-29"));
    let r = reports(&e.advance_watermark(at("2026-03-30T06:00:00Z")));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].data["day"], "2026-03-29");
    assert_eq!(r[0].data["team"]["messages_in"], 2);
    assert_eq!(
        crate::engine::report::report_time(
            chrono_tz::Europe::Madrid,
            "2026-03-29".parse().unwrap()
        ),
        at("2026-03-29T06:00:00Z")
    );
    assert_eq!(
        crate::engine::report::report_time(
            chrono_tz::Europe::Madrid,
            "2026-03-28".parse().unwrap()
        ),
        at("2026-03-28T07:00:00Z")
    );
}

#[test]
fn an_english_tenant_gets_an_english_report() {
    let mut e = engine_with(|c| c.defaults.language = crate::texts::Language::En);
    feed_all(
        &mut e,
        &[received(1, "c", at("2026-03-02T10:00:00Z"), Some(7), "hi")],
    );
    let r = reports(&e.advance_watermark(at("2026-03-03T08:00:00Z")));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].title, "Daily report for 2026-03-02");
    assert!(
        r[0].message.starts_with("Yesterday: 1 conversations"),
        "{}",
        r[0].message
    );
}

#[test]
fn snapshots_count_hot_leads_now_and_todays_leads() {
    let mut e = engine();
    let mut events = vec![referral_lead(1, t(0.0))];
    events.extend(heat(10, 1.0));
    // Into the next minutes: snapshots at 09:07 see the hot lead.
    events.push(tick_event(30, t(8.0) + chrono::Duration::seconds(1)));
    let outs = feed_all(&mut e, &events);
    assert_eq!(hot(&outs).len(), 1);
    let m = snapshot_of(&outs, 7, t(8.0));
    assert_eq!(m.hot_leads, 1);
    assert_eq!((m.leads_generated_today, m.leads_converted_today), (1, 0));
    // Converted: no longer hot, and converted today.
    let outs = feed_all(
        &mut e,
        &[
            status(31, "l1", t(9.0), LeadStatus::Converted),
            tick_event(32, t(10.0) + chrono::Duration::seconds(1)),
        ],
    );
    let m = snapshot_of(&outs, 7, t(10.0));
    assert_eq!(m.hot_leads, 0);
    assert_eq!((m.leads_generated_today, m.leads_converted_today), (1, 1));
}

/// Runs `events` in the given order with late events allowed for 2 h, then one far watermark;
/// returns the net results and every seller's final metrics (as JSON, without ids and times).
fn net_results(events: &[Event], delay: Duration) -> (Net, Vec<String>) {
    let mut e = engine_with(|c| {
        c.watermark_delay = delay;
        c.defaults.allowed_lateness = Duration::from_secs(7200);
    });
    let mut outs = feed(&mut e, events);
    let end = events.iter().map(|e| e.occurred_at).max().unwrap() + chrono::Duration::days(5);
    outs.extend(e.advance_watermark(end));
    assert!(
        outs.iter().all(|o| !matches!(o, Output::TooLate(_))),
        "everything is within lateness"
    );
    let mut metrics = Vec::new();
    for tenant in [42u64, 77] {
        for mut m in e.seller_metrics(tenant) {
            m.id = Uuid::nil();
            // Hot-lead notifications follow the score's path through the events as they arrive
            // (hysteresis): "hot now" depends on arrival order by design.
            m.hot_leads = 0;
            metrics.push(serde_json::to_string(&m).unwrap());
        }
    }
    (net(&outs), metrics)
}

#[test]
fn shuffling_far_beyond_the_watermark_delay_gives_the_same_results_after_corrections() {
    // Events of one wait only a second apart, displaced by up to 15 minutes while deadlines
    // fire 30 s behind event time: alerts fire, samples are sent and later corrected.
    let window_s: u64 = 900;
    let delay = Duration::from_secs(30);
    let mut corrections = 0;
    for seed in 1..=4u64 {
        let mut rng = Rng(0x51_7CC1_B727_220A ^ seed);
        let events = workload(&mut rng, 1);
        let (reference, ref_metrics) = net_results(&events, delay);
        assert!(reference.samples.len() > 20, "seed {seed}");
        assert!(reference.unanswered.values().any(|w| *w), "seed {seed}");
        let mut keyed: Vec<(DateTime<Utc>, u64, Event)> = events
            .iter()
            .map(|e| {
                let jitter = chrono::Duration::milliseconds(rng.below(window_s * 1000) as i64);
                (e.occurred_at + jitter, rng.next(), e.clone())
            })
            .collect();
        keyed.sort_by_key(|(k, tie, _)| (*k, *tie));
        let shuffled: Vec<Event> = keyed.into_iter().map(|(_, _, e)| e).collect();
        let mut e = engine_with(|c| {
            c.watermark_delay = delay;
            c.defaults.allowed_lateness = Duration::from_secs(7200);
        });
        corrections += feed(&mut e, &shuffled)
            .iter()
            .filter(|o| matches!(o, Output::ResponseTime(r) if r.retracts.is_some()))
            .count();
        let (got, metrics) = net_results(&shuffled, delay);
        assert!(!reference.status_changes.is_empty(), "seed {seed}");
        assert_eq!(got.status_changes, reference.status_changes, "seed {seed}");
        assert_eq!(got.samples, reference.samples, "seed {seed}");
        assert_eq!(got.unanswered, reference.unanswered, "seed {seed}");
        assert_eq!(metrics, ref_metrics, "seed {seed}");
    }
    assert!(
        corrections > 0,
        "the shuffles made the processors correct something"
    );
}

// ---------------------------------------------------------------- threshold edges

#[test]
fn a_score_just_under_the_threshold_does_not_notify_and_one_at_it_does() {
    // The same heat reaches exactly 0.8 (see crossing_the_threshold_notifies_the_seller_once).
    let run = |threshold: f64| {
        let mut e = engine_with(|c| c.defaults.hot_lead_threshold = threshold);
        let mut events = vec![referral_lead(1, t(0.0))];
        events.extend(heat(10, 1.0));
        let outs = feed(&mut e, &events);
        let top = scores(&outs).iter().map(|s| s.score).fold(0.0, f64::max);
        (hot(&outs).len(), top)
    };
    let (notified, top) = run(0.8);
    assert_eq!((notified, top), (1, 0.8), "at the threshold: notified");
    let just_above = f64::from_bits(top.to_bits() + 1);
    assert_eq!(run(just_above).0, 0, "a score just under the threshold");
}

#[test]
fn a_heartbeat_exactly_at_the_session_deadline_keeps_it_alive() {
    let mut e = engine();
    feed(&mut e, &[session(1, "started", "s1", t(0.0))]);
    assert_eq!(next_rule_deadline(&e), Some(t(10.0)));
    // Arrives after the clock passed the deadline, occurred exactly at it: alive, corrected.
    let fired = e.advance_watermark(t(10.0));
    assert_eq!(of_kind(&fired, NotificationType::SessionTimeout).len(), 1);
    let outs = feed(&mut e, &[session(2, "heartbeat", "s1", t(10.0))]);
    let w = of_kind(&outs, NotificationType::SessionTimeout);
    assert_eq!(w.len(), 1);
    assert!(w[0].withdraws.is_some(), "the timeout is withdrawn");
    // In order, a heartbeat at the deadline means no timeout at all.
    let mut e = engine();
    let outs = feed(
        &mut e,
        &[
            session(1, "started", "s1", t(0.0)),
            session(2, "heartbeat", "s1", t(10.0)),
        ],
    );
    assert!(of_kind(&outs, NotificationType::SessionTimeout).is_empty());
    assert_eq!(next_rule_deadline(&e), Some(t(20.0)));
    let outs = e.advance_watermark(t(20.0) - chrono::Duration::milliseconds(1));
    assert!(
        outs.is_empty(),
        "a millisecond before the deadline: nothing"
    );
}

#[test]
fn a_mean_response_exactly_at_the_limit_does_not_alert_a_second_more_does() {
    let run = |reply_after_s: i64| {
        let mut e = engine();
        let start = t(0.0);
        let events = vec![
            received(1, "c1", start, Some(7), ""),
            sent(
                2,
                "c1",
                start + chrono::Duration::seconds(reply_after_s),
                7,
                false,
            ),
            at_watermark(3, t(45.0)),
            at_watermark(4, t(50.0)),
        ];
        alerts(&feed_all(&mut e, &events)).len()
    };
    // Default limit: 30 min; the alert is for a mean *greater* than it.
    assert_eq!(run(30 * 60), 0);
    assert_eq!(run(30 * 60 + 1), 1);
}

// ---------------------------------------------------------------- bounded state per tenant

fn over_limit(outs: &[Output]) -> Vec<&OverLimit> {
    outs.iter()
        .filter_map(|o| match o {
            Output::OverLimit(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn limited(f: impl FnOnce(&mut Thresholds)) -> PartitionEngine {
    engine_with(|c| f(&mut c.defaults))
}

/// Day `d` (fractions allowed) after the origin.
fn day(d: f64) -> DateTime<Utc> {
    t(d * 24.0 * 60.0)
}

#[test]
fn a_flood_of_random_conversation_ids_stops_at_the_limit_and_spares_other_tenants() {
    let mut e = limited(|th| th.max_conversations = 50);
    let mut refused = Vec::new();
    let mut other = Vec::new();
    for i in 0..200u128 {
        let at = t(i as f64 * 0.1);
        let outs = e.on_event(&received(10_000 + i, &format!("flood-{i}"), at, None, ""));
        refused.extend(over_limit(&outs).into_iter().cloned());
        if i < 50 {
            assert!(
                over_limit(&outs).is_empty(),
                "conversation {i} is within the limit"
            );
        } else {
            // Refused whole: nothing else came out of it.
            assert_eq!(outs.len(), over_limit(&outs).len(), "{outs:?}");
        }
        // Another tenant of the partition, writing at the same time, is unaffected.
        if i % 20 == 0 {
            let o = e.on_event(&for_tenant(
                7,
                received(20_000 + i, &format!("calm-{i}"), at, None, ""),
            ));
            other.extend(o);
        }
    }
    assert_eq!(refused.len(), 150);
    assert_eq!(e.stats().over_limit, 150);
    let r = &refused[0];
    assert_eq!(
        (r.tenant_id, r.entity, r.entity_id.as_str(), r.limit),
        (TENANT, EntityKind::Conversation, "flood-50", 50)
    );
    assert_eq!(r.event_id, id(10_050));
    let text = r.to_string();
    assert!(
        text.contains("max_conversations") && text.contains("conversation"),
        "{text}"
    );
    assert!(over_limit(&other).is_empty());
    assert_eq!(e.entity_counts(TENANT).conversations, 50);
    assert_eq!(e.entity_counts(7).conversations, 10);

    // Conversations already kept go on working at the limit.
    let outs = e.on_event(&sent(30_000, "flood-3", t(21.0), 5, false));
    assert_eq!(samples(&outs).len(), 1);
    // A refused event is not remembered as seen: sent again, it is refused again.
    let again = e.on_event(&received(10_199, "flood-199", t(21.0), None, ""));
    assert_eq!(over_limit(&again).len(), 1);
    assert_eq!(e.stats().duplicates, 0);
    // Their deadlines are the kept conversations' only: 49 alerts (one was answered), plus the
    // other tenant's 10.
    let outs = e.advance_watermark(t(200.0));
    let alerts = of_kind(&outs, NotificationType::UnansweredConversation);
    assert_eq!(alerts.iter().filter(|n| n.tenant_id == TENANT).count(), 49);
    assert_eq!(alerts.iter().filter(|n| n.tenant_id == 7).count(), 10);
}

#[test]
fn every_kind_of_entity_has_its_limit() {
    let mut e = limited(|th| {
        th.max_leads = 5;
        th.max_sessions = 4;
        th.max_sellers = 3;
    });
    let mut n = 40_000u128;
    let mut next = || {
        n += 1;
        n
    };
    let mut outs = Vec::new();
    for i in 0..20u32 {
        let at = t(f64::from(i) * 0.1);
        outs.extend(e.on_event(&status(next(), &format!("lead-{i}"), at, LeadStatus::Lost)));
        outs.extend(e.on_event(&session(next(), "started", &format!("s-{i}"), at)));
        // New sellers by assignment into one conversation, and by user.upserted.
        outs.extend(e.on_event(&assigned(next(), "c1", at, 100 + u64::from(i))));
        outs.extend(e.on_event(&ev(
            next(),
            at,
            Payload::UserUpserted(UserUpserted {
                user_id: 500 + u64::from(i),
                name: format!("user {i}"),
                role: Role::Seller,
                time_zone: None,
                active: None,
            }),
        )));
    }
    let counts = e.entity_counts(TENANT);
    assert_eq!(
        (
            counts.leads,
            counts.sessions,
            counts.sellers,
            counts.conversations
        ),
        (5, 4, 3, 1)
    );
    let by_kind = |k: EntityKind| over_limit(&outs).iter().filter(|r| r.entity == k).count();
    assert_eq!(by_kind(EntityKind::Lead), 15);
    assert_eq!(by_kind(EntityKind::Session), 16);
    // 40 events name a new seller; the first 3 are kept.
    assert_eq!(by_kind(EntityKind::Seller), 37);
    // The ranking holds no more sellers than the limit.
    let metrics = e.seller_metrics(TENANT);
    assert!(metrics.len() <= 3, "{} sellers ranked", metrics.len());
}

#[test]
fn entities_are_forgotten_by_the_rule_and_a_pending_follow_up_keeps_its_lead() {
    let mut e = engine();
    let mut n = 50_000u128;
    let mut next = || {
        n += 1;
        n
    };
    let start = [
        received(next(), "c1", t(0.0), Some(7), "hola"),
        sent(next(), "c1", t(1.0), 7, false),
        lead_created(
            next(),
            "l-follow",
            t(2.0),
            LeadSource::Referral,
            Some(8),
            Some("c2"),
            None,
        ),
        status(next(), "l-follow", t(2.0), LeadStatus::Interested),
        follow_up(next(), "l-follow", t(3.0), 8, day(30.0)),
        lead_created(
            next(),
            "l-plain",
            t(4.0),
            LeadSource::Website,
            Some(7),
            None,
            None,
        ),
        session(next(), "started", "s1", t(5.0)),
    ];
    feed(&mut e, &start);
    let counts = e.entity_counts(TENANT);
    assert_eq!(
        (
            counts.conversations,
            counts.leads,
            counts.sessions,
            counts.sellers
        ),
        (2, 2, 1, 2)
    );
    // Event time moves on in another conversation ("tick", no seller), one customer message
    // every 6 hours (each id once: `on` remembers where it stopped).
    let mut on = 0.0;
    let mut tick = |e: &mut PartitionEngine, until: f64| {
        let mut outs = Vec::new();
        while on + 0.25 <= until {
            on += 0.25;
            let n = 90_000 + (on * 4.0) as u128;
            outs.extend(e.on_event(&received(n, "tick", day(on), None, "")));
        }
        outs
    };
    // The session timed out after 10 minutes; beyond the allowed lateness (1 h) it is forgotten.
    tick(&mut e, 1.0);
    assert_eq!(e.entity_counts(TENANT).sessions, 0);
    // Within 7 days of their last event, the others are kept.
    tick(&mut e, 6.75);
    let counts = e.entity_counts(TENANT);
    assert_eq!(
        (counts.conversations, counts.leads, counts.sellers),
        (3, 2, 2)
    );
    // Past 7 days: c1, l-plain and seller 7 are forgotten; l-follow (due in 30 days) is kept,
    // and with it its conversation c2 and its seller 8.
    let e7 = e.on_event(&received(
        next(),
        "tick",
        day(7.0) + chrono::Duration::minutes(10),
        None,
        "",
    ));
    assert!(over_limit(&e7).is_empty());
    let tenant = &e.tenants[&TENANT];
    assert!(tenant.conversations.get(&"c1".into()).is_none());
    assert!(tenant.conversations.get(&"c2".into()).is_some());
    let counts = e.entity_counts(TENANT);
    assert_eq!(
        (counts.conversations, counts.leads, counts.sellers),
        (2, 1, 1),
        "c2 and tick, l-follow, seller 8"
    );
    // The follow-up still reminds, at its due time.
    let outs = tick(&mut e, 30.5);
    let reminders = of_kind(&outs, NotificationType::FollowUpReminder);
    assert_eq!(reminders.len(), 2, "the day before and at due time");
    assert_eq!(reminders[1].created_at, day(30.0));
    // Reminded and silent for more than 7 days: now forgotten too.
    assert_eq!(
        e.entity_counts(TENANT),
        EntityCounts {
            conversations: 1,
            leads: 0,
            sessions: 0,
            sellers: 0,
        }
    );
}

#[test]
fn an_event_for_a_forgotten_conversation_is_too_late_or_starts_afresh() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            assigned(1, "c1", t(0.0), 7),
            received(2, "c1", t(1.0), None, ""),
            sent(3, "c1", t(2.0), 7, false),
            received(4, "tick", day(8.0), None, ""),
        ],
    );
    assert!(e.tenants[&TENANT].conversations.get(&"c1".into()).is_none());
    // Older than the allowed lateness: too late, as it would be with c1 kept.
    let outs = feed(&mut e, &[received(5, "c1", t(3.0), None, "")]);
    assert!(matches!(outs[..], [Output::TooLate(_)]), "{outs:?}");
    // Newer: a new conversation, whose assignment is unknown — the alert goes to the secretaries.
    let outs = feed(&mut e, &[received(6, "c1", day(8.0), None, "")]);
    assert!(over_limit(&outs).is_empty());
    let outs = e.advance_watermark(day(8.0) + chrono::Duration::hours(2));
    let alert = of_kind(&outs, NotificationType::UnansweredConversation)
        .into_iter()
        .find(|n| n.data["conversation_id"] == json!("c1"))
        .expect("an alert for c1");
    assert_eq!(
        alert.audience,
        Audience::Role {
            role: Role::Secretary
        }
    );
}

/// A month of traffic for one tenant: a new conversation every 2 hours (a customer message and
/// a reply by one of four sellers, a lead on every fourth), sessions that time out unended.
fn month_of_traffic() -> Vec<Event> {
    let mut events = Vec::new();
    let mut n = 60_000u128;
    let mut next = || {
        n += 1;
        n
    };
    for i in 0..(30 * 12u32) {
        let at = t(f64::from(i) * 120.0);
        let conv = format!("m-{i}");
        let seller = 1 + u64::from(i % 4);
        events.push(received(next(), &conv, at, Some(seller), "precio"));
        events.push(sent(
            next(),
            &conv,
            at + chrono::Duration::minutes(3),
            seller,
            false,
        ));
        if i % 4 == 0 {
            events.push(lead_created(
                next(),
                &format!("lead-{i}"),
                at + chrono::Duration::minutes(4),
                LeadSource::Website,
                Some(seller),
                Some(&conv),
                None,
            ));
        }
        events.push(session(next(), "started", &format!("call-{i}"), at));
    }
    events
}

#[test]
fn a_month_of_traffic_keeps_about_seven_days_of_entities_and_replays_identically() {
    let events = month_of_traffic();
    let run = || {
        let mut e = engine();
        let mut outs = Vec::new();
        let mut peak = EntityCounts::default();
        for x in &events {
            outs.extend(e.on_event(x));
            let c = e.entity_counts(TENANT);
            peak.conversations = peak.conversations.max(c.conversations);
            peak.leads = peak.leads.max(c.leads);
            peak.sessions = peak.sessions.max(c.sessions);
            peak.sellers = peak.sellers.max(c.sellers);
        }
        // Every entity kept has its last event recorded, and no more: forgetting finds them all.
        let tenant = &e.tenants[&TENANT];
        assert_eq!(
            tenant.conversation_activity.len(),
            tenant.conversations.len()
        );
        assert_eq!(tenant.lead_activity.len(), tenant.leads.len());
        (outs, peak, e.entity_counts(TENANT), e.stats())
    };
    let (outs, peak, end, stats) = run();
    assert_eq!(stats.over_limit, 0);
    // 12 conversations a day for 7 days, plus the minute of pruning lag.
    assert!(peak.conversations <= 7 * 12 + 2, "{peak:?}");
    assert!(peak.leads <= 7 * 3 + 2, "{peak:?}");
    // Sessions time out after 10 minutes and are gone an hour later.
    assert!(peak.sessions <= 2, "{peak:?}");
    assert_eq!(peak.sellers, 4);
    assert!(end.conversations >= 7 * 12 - 1, "{end:?}");
    // The seller windows still see 7 days of samples: seller 1 answered 3 waits a day.
    let last = snapshots(&outs)
        .into_iter()
        .rev()
        .find(|m| m.seller_id == 1)
        .cloned()
        .unwrap();
    assert!(
        (20..=22).contains(&last.response_7d.count),
        "{}",
        last.response_7d.count
    );
    let (again, ..) = run();
    assert_eq!(again, outs, "forgetting is a function of the events");
}

// ---------------------------------------------------------------- snapshots (checkpoints)

/// An output as the runner would produce it: the record's JSON; the dead-lettered kinds (not
/// serializable themselves) by their full debug form.
fn wire(o: &Output) -> String {
    match o {
        Output::Notification(n) => serde_json::to_string(n).unwrap(),
        Output::ResponseTime(r) => serde_json::to_string(r).unwrap(),
        Output::LeadScore(l) => serde_json::to_string(l).unwrap(),
        Output::SellerMetrics(m) => serde_json::to_string(m).unwrap(),
        other => format!("{other:?}"),
    }
}

/// Feeds `events` (positions `from..` of the stream) like the runner does: every fifth position
/// the clock watermark advances first, to a while behind the event (as log time would).
fn drive(e: &mut PartitionEngine, events: &[Event], from: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if (from + i) % 5 == 4 {
            let clock = event.occurred_at - chrono::Duration::minutes(3);
            out.extend(e.advance_watermark(clock).iter().map(wire));
        }
        out.extend(e.on_event(event).iter().map(wire));
    }
    out
}

#[test]
fn a_snapshot_restored_mid_stream_gives_the_same_outputs_byte_for_byte() {
    let mut c = config();
    c.watermark_delay = Duration::from_secs(30);
    c.defaults.allowed_lateness = Duration::from_secs(7200);
    let config = Arc::new(c);
    // One seed, two cuts: each run drives ~10k events (the debug build makes more slow).
    for seed in [1u64] {
        let mut rng = Rng(0x5EED_C4EC_B017_0001_u64 ^ seed);
        let events = workload(&mut rng, 1);
        let end = events.iter().map(|e| e.occurred_at).max().unwrap() + chrono::Duration::days(2);
        let mut straight = PartitionEngine::new(config.clone());
        let mut expected = drive(&mut straight, &events, 0);
        expected.extend(straight.advance_watermark(end).iter().map(wire));
        assert!(expected.len() > 100, "a stream worth checkpointing");

        let n = events.len();
        for cut in [n / 3, 2 * n / 3] {
            let mut first = PartitionEngine::new(config.clone());
            let mut got = drive(&mut first, &events[..cut], 0);
            let bytes = first.snapshot();
            drop(first);
            let mut restored = PartitionEngine::restore(config.clone(), &bytes).unwrap();
            let again = String::from_utf8(restored.snapshot()).unwrap();
            let once = String::from_utf8(bytes.clone()).unwrap();
            if let Some(at) = once.bytes().zip(again.bytes()).position(|(a, b)| a != b) {
                let from = at.saturating_sub(300);
                panic!(
                    "a snapshot is a function of the state; differs at {at}:\n{}\n---\n{}",
                    &once[from..(at + 100).min(once.len())],
                    &again[from..(at + 100).min(again.len())]
                );
            }
            assert_eq!(once.len(), again.len());
            got.extend(drive(&mut restored, &events[cut..], cut));
            got.extend(restored.advance_watermark(end).iter().map(wire));
            assert_eq!(got, expected, "seed {seed}, restored at {cut} of {n}");
            assert_eq!(restored.stats(), straight.stats());
        }
    }
}

#[test]
fn a_snapshot_of_another_version_or_configuration_is_refused() {
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "precio")]);
    let bytes = e.snapshot();
    assert!(PartitionEngine::restore(Arc::new(config()), &bytes).is_ok());

    let other = engine_with(|c| c.defaults.allowed_lateness = Duration::from_secs(1));
    assert!(matches!(
        PartitionEngine::restore(other.config.clone(), &bytes),
        Err(snapshot::SnapshotError::Config)
    ));

    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["state_version"] = json!(snapshot::STATE_VERSION + 1);
    assert!(matches!(
        PartitionEngine::restore(Arc::new(config()), &serde_json::to_vec(&v).unwrap()),
        Err(snapshot::SnapshotError::Version { .. })
    ));
    // The same, as the snapshot writes it (the version first, read without decoding the rest).
    let ours = format!("{{\"state_version\":{},", snapshot::STATE_VERSION);
    let theirs = format!("{{\"state_version\":{},", snapshot::STATE_VERSION + 1);
    assert!(bytes.starts_with(ours.as_bytes()));
    let mut newer = theirs.into_bytes();
    newer.extend_from_slice(&bytes[ours.len()..]);
    assert!(matches!(
        PartitionEngine::restore(Arc::new(config()), &newer),
        Err(snapshot::SnapshotError::Version { found }) if found == snapshot::STATE_VERSION + 1
    ));
    for bad in [&b""[..], b"{}", &bytes[..bytes.len() / 2]] {
        assert!(matches!(
            PartitionEngine::restore(Arc::new(config()), bad),
            Err(snapshot::SnapshotError::Decode(_))
        ));
    }
}

#[test]
fn the_next_deadline_of_a_tenant_is_its_own_earliest() {
    let mut e = engine();
    assert_eq!(e.next_deadline_of(TENANT), None);
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "hola")]);
    let mut other = received(2, "c9", t(0.5), Some(8), "hola");
    other.tenant_id = TENANT + 1;
    feed(&mut e, &[other]);
    let unanswered = chrono_duration(config().defaults.unanswered_after);
    assert_eq!(e.next_deadline_of(TENANT), Some(t(0.0) + unanswered));
    assert_eq!(e.next_deadline_of(TENANT + 1), Some(t(0.5) + unanswered));
    assert_eq!(e.next_deadline(), Some(t(0.0) + unanswered));
    assert_eq!(e.next_deadline_of(TENANT + 2), None);
    // Answered: its deadline is gone, the other tenant's stays.
    feed(&mut e, &[sent(3, "c1", t(1.0), 7, false)]);
    assert_ne!(e.next_deadline_of(TENANT), Some(t(0.0) + unanswered));
    assert_eq!(e.next_deadline_of(TENANT + 1), Some(t(0.5) + unanswered));
}

// ---------------------------------------------------------------- rules = "conversations"

#[test]
fn conversation_rules_alone_give_the_same_samples_and_alerts_and_nothing_else() {
    let stream = [
        lead_created(
            1,
            "l1",
            t(0.0),
            LeadSource::MetaAds,
            Some(7),
            Some("c1"),
            None,
        ),
        received(2, "c1", t(0.0), Some(7), "quiero comprar hoy"),
        sent(3, "c1", t(2.0), 7, false),
        received(4, "c2", t(3.0), None, "hola"),
        follow_up(5, "l1", t(4.0), 7, t(30.0)),
        session(6, "started", "s1", t(5.0)),
        received(7, "c1", t(10.0), None, "¿precio?"),
        sent(8, "c1", t(90.0), 7, false),
        closed(9, "c2", t(200.0)),
        received(10, "c3", t(24.0 * 60.0 + 1.0), None, "hola"),
    ];
    let conversation_outputs = |outs: Vec<Output>| -> Vec<Output> {
        outs.into_iter()
            .filter(|o| match o {
                Output::ResponseTime(_) => true,
                Output::Notification(n) => n.kind == NotificationType::UnansweredConversation,
                _ => false,
            })
            .collect()
    };
    let all = feed_all(&mut engine(), &stream);
    let mut limited = engine_with(|c| c.rules = crate::config::Rules::Conversations);
    let only = feed_all(&mut limited, &stream);

    assert_eq!(samples(&only).len(), 2, "{only:?}");
    assert_eq!(
        of_kind(&only, NotificationType::UnansweredConversation).len(),
        4,
        "c1 and c2 alert and are withdrawn: {only:?}"
    );
    assert_eq!(conversation_outputs(all.clone()), only);
    assert!(
        all.len() > only.len(),
        "the other rules had outputs to leave out: {all:?}"
    );
    assert!(limited.tenants[&TENANT].ended_waits.is_empty());
    assert_eq!(
        rule_deadlines(&limited.tenants[&TENANT]),
        1,
        "c3's wait only"
    );
}

#[test]
fn the_rules_switch_reads_all_or_conversations_and_names_itself_otherwise() {
    use crate::config::Rules;
    assert_eq!(
        "conversations".parse::<Rules>().unwrap(),
        Rules::Conversations
    );
    assert_eq!("all".parse::<Rules>().unwrap(), Rules::All);
    let e = "leads".parse::<Rules>().unwrap_err().to_string();
    assert!(
        e.contains("processors.rules") && e.contains("conversations"),
        "{e}"
    );
    let c: Config = toml::from_str("rules = \"conversations\"").unwrap();
    assert_eq!(c.rules, Rules::Conversations);
    assert!(toml::from_str::<Config>("rules = \"some\"").is_err());
}

#[test]
fn a_late_reply_taking_over_a_wait_whose_first_message_was_forgotten_is_measured_not_a_crash() {
    // A wait of 4 h: the customer's message at 0 is forgotten after 3 h (lateness plus
    // `hot_lead_no_contact`, the conversations' history), while the reply at 240 that ended the
    // wait still names it. A reply from 210 arriving 42 min late (within the 1 h lateness) takes
    // that wait over. It once panicked ("a remembered starter"): a crash loop, since a restart
    // replays the same record.
    let mut e = engine();
    feed(&mut e, &[received(1, "c1", t(0.0), Some(7), "")]);
    let mut n = 100;
    let mut m = 6.0;
    while m < 240.0 {
        // Another conversation's traffic carries the watermark on.
        feed(&mut e, &[assigned(n, "c2", t(m), 8)]);
        n += 1;
        m += 6.0;
    }
    let on_time = feed(&mut e, &[sent(2, "c1", t(240.0), 7, false)]);
    assert_eq!(samples(&on_time).len(), 1, "{on_time:#?}");
    assert_eq!(samples(&on_time)[0].response_seconds, 240.0 * 60.0);
    feed(&mut e, &[assigned(n, "c2", t(252.0), 8)]);

    let late = feed(&mut e, &[sent(3, "c1", t(210.0), 7, false)]);
    let measured: Vec<f64> = samples(&late).iter().map(|s| s.response_seconds).collect();
    assert!(
        measured.contains(&(210.0 * 60.0)),
        "the late reply answered the wait that began at 0: {late:#?}"
    );
}

// ------------------------------------------------- seller windows kept up to date (windows.rs)

fn user(n: u128, at: DateTime<Utc>, user: u64, role: Role, active: Option<bool>) -> Event {
    ev(
        n,
        at,
        Payload::UserUpserted(UserUpserted {
            user_id: user,
            name: format!("U{user}"),
            role,
            time_zone: None,
            active,
        }),
    )
}

/// The tenant's windows against a scan of its logs, its conversation and lead figures against
/// a fresh build, and its evaluation at the windows' time against the scanning evaluation,
/// serialized (so floats compare bit for bit). Returns that evaluation.
fn check_seller_windows(e: &PartitionEngine, context: &str) -> Vec<SellerMetrics> {
    let Some(t) = e.tenants.get(&TENANT) else {
        return Vec::new();
    };
    if let Err(why) = t.sellers.check_windows() {
        panic!("{context}: {why}");
    }
    if let Err(why) = t.sellers.check_figures(&t.conversations, &t.leads) {
        panic!("{context}: figures: {why}");
    }
    let Some(at) = t.sellers.windows_at() else {
        return Vec::new();
    };
    let json = |v: &[SellerMetrics]| serde_json::to_string(v).unwrap();
    let indexed = t
        .sellers
        .evaluate(t.id, &t.th, at, &t.conversations, &t.leads);
    let scanned = t
        .sellers
        .evaluate_by_scan(t.id, &t.th, at, &t.conversations, &t.leads);
    assert_eq!(json(&indexed), json(&scanned), "{context}");
    indexed
}

/// Nine days of one tenant in `Europe/Madrid` across the spring DST change (2026-03-29):
/// customers writing every few minutes, replies (quick, slow, automated, absent) by six sellers,
/// reassignments, closes, leads with statuses, two of them becoming managers, inactive and
/// sellers again, a seller seen only on the first day (forgotten by retention); delivered shuffled within
/// `shuffle` (late events, and late customer messages that split waits: retractions).
fn week_stream(rng: &mut Rng, shuffle: i64) -> Vec<Event> {
    let start = utc("2026-03-24T20:00:00Z");
    let mut events = Vec::new();
    let mut n: u128 = 10_000;
    let mut next = || {
        n += 1;
        n
    };
    let mut now = 0i64; // seconds after start
    let mut k = 0u32;
    while now < 9 * 86_400 {
        k += 1;
        let at = |s: i64| start + chrono::Duration::milliseconds(s * 1000 + (s % 7) * 131);
        let (conv, seller) = if now < 86_400 && rng.below(10) == 0 {
            // Seller 105 has conversations of their own, on the first day only.
            (format!("o{}", rng.below(3)), 105)
        } else {
            (format!("w{}", rng.below(40)), 100 + rng.below(5))
        };
        events.push(received(next(), &conv, at(now), None, "precio"));
        match rng.below(10) {
            0 => events.push(assigned(next(), &conv, at(now + 30), seller)),
            1 => events.push(closed(next(), &conv, at(now + rng.below(5000) as i64))),
            2 => events.push(sent(next(), &conv, at(now + 20), seller, true)),
            3 => {}
            // Equal response times: a reply exactly 60 s after.
            4 => events.push(sent(next(), &conv, at(now + 60), seller, false)),
            _ => {
                let reply = now + rng.below(7200) as i64;
                events.push(sent(next(), &conv, at(reply), seller, false));
            }
        }
        // (Not on 105's conversations: a lead id created again later would hold them.)
        if k.is_multiple_of(25) && seller != 105 {
            let lead = format!("l{}", rng.below(30));
            let with_seller = rng.below(3) > 0;
            events.push(lead_created(
                next(),
                &lead,
                at(now + 5),
                LeadSource::MetaAds,
                with_seller.then_some(seller),
                Some(&conv),
                None,
            ));
            let s = [
                LeadStatus::Contacted,
                LeadStatus::Converted,
                LeadStatus::Lost,
            ][rng.below(3) as usize];
            events.push(status(next(), &lead, at(now + 600), s));
        }
        if k.is_multiple_of(97) {
            let (role, active) = match rng.below(3) {
                0 => (Role::Manager, None),
                1 => (Role::Seller, Some(false)),
                _ => (Role::Seller, None),
            };
            events.push(user(next(), at(now + 1), 103 + rng.below(2), role, active));
        }
        now += 60 + rng.below(300) as i64;
    }
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
    deliver_late(&mut events, rng, shuffle);
    events
}

/// Late deliveries: each event may swap with a later one up to `shuffle` seconds after it.
fn deliver_late(events: &mut [Event], rng: &mut Rng, shuffle: i64) {
    for i in 0..events.len() {
        let j = i + 1 + rng.below(4) as usize;
        if j < events.len()
            && rng.below(3) == 0
            && events[j].occurred_at - events[i].occurred_at <= chrono::Duration::seconds(shuffle)
        {
            events.swap(i, j);
        }
    }
}

fn week_config() -> Config {
    let mut c = config();
    c.defaults.time_zone = "Europe/Madrid".into();
    c.defaults.allowed_lateness = Duration::from_secs(3600);
    c
}

#[test]
fn seller_windows_follow_a_week_of_late_retracted_and_reranked_samples_like_a_scan() {
    for seed in [1u64, 2] {
        let mut rng = Rng(0x7D_5EED_0000_0001 ^ seed);
        let events = week_stream(&mut rng, 1500);
        let mut e = PartitionEngine::new(Arc::new(week_config()));
        let mut retracted_or_late = 0;
        let mut newest = events[0].occurred_at;
        for (i, event) in events.iter().enumerate() {
            if event.occurred_at < newest {
                retracted_or_late += 1;
            }
            newest = newest.max(event.occurred_at);
            let outs = e.on_event(event);
            assert!(
                !outs.iter().any(|o| matches!(o, Output::TooLate(_))),
                "within lateness"
            );
            if i % 3 == 0 || i + 1 == events.len() {
                check_seller_windows(&e, &format!("seed {seed}, after event {i}"));
            }
        }
        let t = &e.tenants[&TENANT];
        let metrics = t.sellers.evaluate(
            t.id,
            &t.th,
            t.sellers.windows_at().unwrap(),
            &t.conversations,
            &t.leads,
        );
        // The stream exercises what it claims to.
        assert!(retracted_or_late > 100, "{retracted_or_late} late events");
        assert!(metrics.iter().all(|m| m.seller_id != 105), "forgotten");
        let most = metrics.iter().map(|m| m.response_7d.count).max().unwrap();
        assert!(most > 100, "{most} samples in a week");
        let team = metrics[0].team.as_ref().unwrap();
        assert!(team.response_7d.count > team.response_today.count);
        assert!(team.response_today.count > team.response_1h.count);
    }
}

#[test]
fn a_week_of_seller_windows_restored_from_a_snapshot_gives_the_same_outputs() {
    let config = Arc::new(week_config());
    let mut rng = Rng(0x7D_5EED_0000_0003);
    let events = week_stream(&mut rng, 1500);
    let mut straight = PartitionEngine::new(config.clone());
    let expected = drive(&mut straight, &events, 0);
    let n = events.len();
    // After the windows filled (day 8) and on a day that started in the other DST offset.
    for cut in [n * 8 / 9, n / 2] {
        let mut first = PartitionEngine::new(config.clone());
        let mut got = drive(&mut first, &events[..cut], 0);
        let bytes = first.snapshot();
        let mut restored = PartitionEngine::restore(config.clone(), &bytes).unwrap();
        // What the index adds is not in the checkpoint.
        assert_eq!(restored.snapshot(), bytes);
        got.extend(drive(&mut restored, &events[cut..], cut));
        check_seller_windows(&restored, "restored");
        assert_eq!(got, expected, "restored at {cut} of {n}");
    }
}

/// A sample `secs` long ending at `end` for seller 7 (conversation `conv`).
fn one_sample(n: u128, conv: &str, end: DateTime<Utc>, secs: i64) -> [Event; 2] {
    [
        received(
            n,
            conv,
            end - chrono::Duration::seconds(secs),
            Some(7),
            "hola",
        ),
        sent(n + 1, conv, end, 7, false),
    ]
}

fn seller_7(e: &PartitionEngine) -> SellerMetrics {
    check_seller_windows(e, "edge");
    let t = &e.tenants[&TENANT];
    let at = t.sellers.windows_at().unwrap();
    t.sellers
        .evaluate(t.id, &t.th, at, &t.conversations, &t.leads)
        .into_iter()
        .find(|m| m.seller_id == 7)
        .unwrap()
}

#[test]
fn a_sample_exactly_seven_days_or_one_hour_old_has_left_its_window() {
    let mut e = engine();
    let b = utc("2026-03-02T10:00:00Z");
    feed_all(&mut e, &one_sample(1, "a", b, 30));
    feed_all(&mut e, &[at_watermark(10, b)]);
    let m = seller_7(&e);
    assert_eq!((m.response_1h.count, m.response_7d.count), (1, 1));
    feed_all(
        &mut e,
        &[at_watermark(11, b + chrono::Duration::minutes(59))],
    );
    assert_eq!(seller_7(&e).response_1h.count, 1);
    feed_all(&mut e, &[at_watermark(12, b + chrono::Duration::hours(1))]);
    let m = seller_7(&e);
    assert_eq!((m.response_1h.count, m.response_7d.count), (0, 1));
    // A late sample inside the evaluated week but outside its hour.
    feed_all(
        &mut e,
        &one_sample(20, "late", b + chrono::Duration::minutes(30), 90),
    );
    let m = seller_7(&e);
    assert_eq!((m.response_1h.count, m.response_7d.count), (1, 2));
    assert_eq!(m.response_7d.max_seconds, Some(90.0));
    let week = b + chrono::Duration::days(7);
    feed_all(
        &mut e,
        &[at_watermark(13, week - chrono::Duration::minutes(1))],
    );
    assert_eq!(seller_7(&e).response_7d.count, 2);
    feed_all(&mut e, &[at_watermark(14, week)]);
    let m = seller_7(&e);
    assert_eq!(m.response_7d.count, 1, "exactly 7 days old is out");
    assert_eq!(m.response_7d.max_seconds, Some(90.0));
    assert_eq!((m.waits_received, m.waits_answered), (1, 1));
}

#[test]
fn the_today_window_starts_at_local_midnight_across_a_dst_change() {
    let mut e = engine_with(|c| c.defaults.time_zone = "Europe/Madrid".into());
    // 2026-03-29 02:00 CET jumps to 03:00 CEST: local midnight of the 29th is 23:00 UTC on the
    // 28th, of the 30th 22:00 UTC on the 29th.
    let midnight_29 = utc("2026-03-28T23:00:00Z");
    let ms = chrono::Duration::milliseconds(1);
    feed_all(&mut e, &one_sample(1, "a", midnight_29 - ms, 10));
    feed_all(&mut e, &one_sample(3, "b", midnight_29, 20));
    feed_all(
        &mut e,
        &[at_watermark(10, midnight_29 + chrono::Duration::minutes(5))],
    );
    let m = seller_7(&e);
    assert_eq!(
        m.response_today.count, 1,
        "the sample at local midnight is today's"
    );
    assert_eq!(m.response_today.max_seconds, Some(20.0));
    let midnight_30 = utc("2026-03-29T22:00:00Z");
    feed_all(
        &mut e,
        &one_sample(20, "c", midnight_30 - chrono::Duration::minutes(2), 40),
    );
    feed_all(
        &mut e,
        &[at_watermark(11, midnight_30 - chrono::Duration::minutes(1))],
    );
    assert_eq!(seller_7(&e).response_today.count, 2, "a 23-hour day");
    feed_all(&mut e, &[at_watermark(12, midnight_30)]);
    let m = seller_7(&e);
    assert_eq!(m.response_today.count, 0, "a new day");
    assert_eq!(m.response_7d.count, 3);
    // Late, at the new day's first instant.
    feed_all(&mut e, &one_sample(30, "d", midnight_30, 50));
    let m = seller_7(&e);
    assert_eq!(
        (m.response_today.count, m.response_today.max_seconds),
        (1, Some(50.0))
    );
}

#[test]
fn equal_samples_are_counted_and_taken_back_one_at_a_time() {
    let mut e = engine();
    let b = utc("2026-03-02T10:00:00Z");
    feed_all(&mut e, &one_sample(1, "a", b, 30));
    feed_all(
        &mut e,
        &one_sample(3, "b", b + chrono::Duration::seconds(5), 30),
    );
    feed_all(
        &mut e,
        &[at_watermark(10, b + chrono::Duration::minutes(1))],
    );
    let m = seller_7(&e);
    assert_eq!(
        (m.response_1h.count, m.response_1h.p90_seconds),
        (2, Some(30.0))
    );
    // A customer message of "a" arriving late, before the first: the wait starts earlier, the
    // sample of 30 s is taken back and one of 50 s replaces it.
    feed_all(
        &mut e,
        &[received(
            20,
            "a",
            b - chrono::Duration::seconds(50),
            Some(7),
            "hola",
        )],
    );
    let m = seller_7(&e);
    assert_eq!(m.response_1h.count, 2);
    assert_eq!(m.response_1h.max_seconds, Some(50.0));
    assert_eq!(m.response_1h.p50_seconds, Some(30.0));
    assert_eq!(m.team.unwrap().response_1h.mean_seconds, Some(40.0));
}

#[test]
fn a_seller_no_longer_ranked_leaves_the_team_windows_and_comes_back() {
    let mut e = engine();
    let b = utc("2026-03-02T10:00:00Z");
    feed_all(&mut e, &one_sample(1, "a", b, 30));
    feed_all(
        &mut e,
        &[
            received(3, "b", b, Some(8), "hola"),
            sent(4, "b", b + chrono::Duration::seconds(10), 8, false),
        ],
    );
    feed_all(
        &mut e,
        &[at_watermark(10, b + chrono::Duration::minutes(1))],
    );
    let team = |e: &PartitionEngine| seller_7(e).team.unwrap().response_7d.count;
    assert_eq!(team(&e), 2);
    feed_all(
        &mut e,
        &[user(
            11,
            b + chrono::Duration::minutes(2),
            8,
            Role::Manager,
            None,
        )],
    );
    assert_eq!(team(&e), 1);
    feed_all(
        &mut e,
        &[at_watermark(12, b + chrono::Duration::minutes(3))],
    );
    assert_eq!(team(&e), 1);
    feed_all(
        &mut e,
        &[user(
            13,
            b + chrono::Duration::minutes(4),
            8,
            Role::Seller,
            None,
        )],
    );
    assert_eq!(team(&e), 2);
}

#[test]
fn lead_figures_in_one_pass_are_the_three_scans() {
    let mut rng = Rng(0x1EAD_0000_0001);
    let events = week_stream(&mut rng, 0);
    let mut e = PartitionEngine::new(Arc::new(week_config()));
    let mut checked = 0;
    for (i, event) in events.iter().enumerate() {
        e.on_event(event);
        if i % 50 != 0 {
            continue;
        }
        let t = &e.tenants[&TENANT];
        let (from, to) = (
            event.occurred_at - chrono::Duration::hours(10),
            event.occurred_at,
        );
        let one = t.leads.seller_figures(&t.conversations, from, to);
        let per = t.leads.per_seller(&t.conversations);
        let between = t.leads.per_seller_between(&t.conversations, from, to);
        let hot = t.leads.hot_per_seller(&t.conversations);
        let mut keys: Vec<UserId> = per
            .keys()
            .chain(between.keys())
            .chain(hot.keys())
            .copied()
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(one.keys().copied().collect::<Vec<_>>(), keys);
        for (s, f) in &one {
            assert_eq!(f.with_seller, per.contains_key(s));
            assert_eq!(
                (f.generated, f.converted),
                per.get(s).copied().unwrap_or_default()
            );
            assert_eq!(
                (f.generated_between, f.converted_between),
                between.get(s).copied().unwrap_or_default()
            );
            assert_eq!(f.hot, hot.get(s).copied().unwrap_or_default());
        }
        checked += usize::from(one.len() > 1);
    }
    assert!(checked > 10);
}

// ------------------------------------- conversation and lead figures kept up to date (figures.rs)

/// Ten days of one tenant in `Europe/Madrid` across the spring DST change, for the seller
/// figures: conversations counted for their assigned seller or their last replier, reassigned,
/// closed and reopened, waits left unanswered past their deadline; leads with and without a
/// seller of their own (then their conversation's, which reassignments move), converted or lost
/// on later days, some getting hot (buying signals, many messages, no reply); and, on the first
/// day only, conversations and leads of their own (seller 105 or none) that retention forgets.
/// Delivered shuffled within `shuffle` seconds: late events, retracted samples, status changes
/// before their `lead.created`.
fn figures_stream(rng: &mut Rng, shuffle: i64) -> Vec<Event> {
    let start = utc("2026-03-24T20:00:00Z");
    let mut events = Vec::new();
    let mut n: u128 = 50_000;
    let mut next = || {
        n += 1;
        n
    };
    let mut now = 0i64;
    let mut k = 0u32;
    while now < 10 * 86_400 {
        k += 1;
        let at = |s: i64| start + chrono::Duration::milliseconds(s * 1000 + (s % 5) * 77);
        let first_day = now < 86_400;
        let (conv, seller) = if first_day && rng.below(4) == 0 {
            (format!("g{}", rng.below(6)), 105)
        } else {
            (format!("f{}", rng.below(30)), 100 + rng.below(5))
        };
        let text = if rng.below(4) == 0 {
            "precio y cotización"
        } else {
            "hola"
        };
        events.push(received(next(), &conv, at(now), None, text));
        match rng.below(12) {
            0 | 1 => events.push(assigned(next(), &conv, at(now + 30), seller)),
            2 => events.push(closed(next(), &conv, at(now + rng.below(5000) as i64))),
            3 => events.push(sent(next(), &conv, at(now + 20), seller, true)),
            // No reply: the wait goes past its deadline (1 h).
            4 | 5 => {}
            _ => {
                let reply = now + rng.below(9000) as i64;
                events.push(sent(next(), &conv, at(reply), seller, false));
            }
        }
        if k.is_multiple_of(9) {
            // First-day leads of their own, on conversations of their own: both forgotten.
            let lead = if first_day && conv.starts_with('g') {
                format!("u{k}")
            } else {
                format!("l{}", rng.below(25))
            };
            let own_seller = (rng.below(2) == 0).then_some(seller);
            let source = [LeadSource::MetaAds, LeadSource::Referral][rng.below(2) as usize];
            events.push(lead_created(
                next(),
                &lead,
                at(now + 5),
                source,
                own_seller,
                Some(&conv),
                None,
            ));
            let (s, later) = match rng.below(5) {
                0 => (LeadStatus::Converted, 600),
                1 => (LeadStatus::Converted, 3600 * (1 + rng.below(40) as i64)),
                2 => (LeadStatus::Lost, 1200),
                3 => (LeadStatus::Contacted, 300),
                _ => (LeadStatus::Negotiation, 900),
            };
            events.push(status(next(), &lead, at(now + later), s));
        }
        now += 30 + rng.below(240) as i64;
    }
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
    deliver_late(&mut events, rng, shuffle);
    events
}

/// What the evaluations checked showed, to tell that the stream exercised the figures.
#[derive(Debug, Default)]
struct FiguresSeen {
    checks: usize,
    unanswered: u32,
    hot: u32,
    generated_today: u32,
    converted_today: u32,
    today_below_total: usize,
    active_below_total: usize,
    chat: usize,
}

/// [`drive`], checking the tenant's windows and figures after every third event.
fn drive_checked(
    e: &mut PartitionEngine,
    events: &[Event],
    from: usize,
    seen: &mut FiguresSeen,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        out.extend(drive(e, std::slice::from_ref(event), from + i));
        if !(from + i).is_multiple_of(3) {
            continue;
        }
        let metrics = check_seller_windows(e, &format!("after event {}", from + i));
        seen.checks += 1;
        for m in &metrics {
            seen.unanswered += m.conversations_unanswered;
            seen.hot += m.hot_leads;
            seen.generated_today += m.leads_generated_today;
            seen.converted_today += m.leads_converted_today;
            seen.today_below_total += usize::from(m.conversations_today < m.conversations_total);
            seen.active_below_total += usize::from(m.conversations_active < m.conversations_total);
            seen.chat += usize::from(m.total_chat_seconds > 0.0);
        }
    }
    out
}

#[test]
fn seller_figures_follow_ten_days_of_conversations_and_leads_like_a_scan_across_a_restore() {
    let config = Arc::new(week_config());
    let mut rng = Rng(0xF16_0000_0001);
    let events = figures_stream(&mut rng, 1500);
    let n = events.len();
    let mut straight = PartitionEngine::new(config.clone());
    let expected = drive(&mut straight, &events, 0);

    let mut seen = FiguresSeen::default();
    // Restored on the fourth day: the figures are built again from the restored state.
    let cut = n * 2 / 5;
    let mut first = PartitionEngine::new(config.clone());
    let mut got = drive_checked(&mut first, &events[..cut], 0, &mut seen);
    let bytes = first.snapshot();
    let mut restored = PartitionEngine::restore(config.clone(), &bytes).unwrap();
    assert_eq!(
        restored.snapshot(),
        bytes,
        "the figures are not in the checkpoint"
    );
    got.extend(drive_checked(&mut restored, &events[cut..], cut, &mut seen));
    assert_eq!(got, expected, "restored at {cut} of {n}");

    // The stream exercised what it claims to.
    let t = &restored.tenants[&TENANT];
    let kept_first_day_leads = (0..2000)
        .filter(|k| t.leads.contains(&EntityId::from(format!("u{k}").as_str())))
        .count();
    assert_eq!(kept_first_day_leads, 0, "forgotten by retention");
    assert!(
        t.conversations.get(&EntityId::from("g0")).is_none(),
        "forgotten by retention"
    );
    assert!(seen.checks > 1000, "{seen:?}");
    assert!(seen.unanswered > 100, "{seen:?}");
    assert!(seen.hot > 100, "{seen:?}");
    assert!(seen.generated_today > 100, "{seen:?}");
    assert!(seen.converted_today > 100, "{seen:?}");
    assert!(seen.today_below_total > 100, "{seen:?}");
    assert!(seen.active_below_total > 100, "{seen:?}");
    assert!(seen.chat > 100, "{seen:?}");
}

#[test]
fn an_overdue_wait_and_a_lead_of_today_count_once_the_minute_reaches_them() {
    let mut e = engine_with(|c| c.defaults.time_zone = "Europe/Madrid".into());
    // Local midnight of 2026-03-03 in Madrid (CET) is 23:00 UTC.
    let midnight = utc("2026-03-02T23:00:00Z");
    let m = |mins: i64| midnight + chrono::Duration::minutes(mins);
    let sellers = |e: &PartitionEngine| {
        let metrics = check_seller_windows(e, "edge");
        metrics.into_iter().find(|x| x.seller_id == 7).unwrap()
    };
    feed_all(
        &mut e,
        &[
            received(1, "a", m(-90), Some(7), "hola"),
            // A lead created (and converted) before local midnight, another after.
            lead_created(
                2,
                "l1",
                m(-5),
                LeadSource::MetaAds,
                Some(7),
                Some("a"),
                None,
            ),
            status(3, "l1", m(-4), LeadStatus::Converted),
            at_watermark(4, m(-3)),
        ],
    );
    let s = sellers(&e);
    // The wait of -90 is overdue from -30.
    assert_eq!(s.conversations_unanswered, 1);
    assert_eq!((s.leads_generated_today, s.leads_converted_today), (1, 1));
    assert_eq!(s.conversations_today, 1);
    // A new day: yesterday's lead and message are not today's.
    feed_all(&mut e, &[at_watermark(5, m(1))]);
    let s = sellers(&e);
    assert_eq!((s.leads_generated_today, s.leads_converted_today), (0, 0));
    assert_eq!(s.conversations_today, 0);
    assert_eq!(s.leads_converted, 1);
    // A lead created at m(3) arriving early (the watermark lags 1 s behind it) counts from the
    // minute the watermark reaches it.
    feed_all(
        &mut e,
        &[
            received(6, "b", m(2), Some(7), "hola"),
            lead_created(7, "l2", m(3), LeadSource::MetaAds, None, Some("b"), None),
        ],
    );
    let s = sellers(&e);
    assert_eq!(s.leads_generated, 2, "l2's seller is its conversation's");
    assert_eq!(s.leads_generated_today, 0, "the minute is m(2), before l2");
    assert_eq!(s.conversations_today, 1);
    assert_eq!(s.conversations_unanswered, 1, "b's wait is not overdue yet");
    feed_all(&mut e, &[at_watermark(8, m(4))]);
    assert_eq!(sellers(&e).leads_generated_today, 1);
    feed_all(&mut e, &[at_watermark(9, m(62))]);
    assert_eq!(
        sellers(&e).conversations_unanswered,
        2,
        "b's deadline is m(62)"
    );
    // A reassignment of b moves it and its sellerless lead to seller 8.
    feed_all(&mut e, &[assigned(10, "b", m(63), 8)]);
    let s = sellers(&e);
    assert_eq!((s.conversations_total, s.leads_generated), (1, 1));
    assert_eq!(s.conversations_unanswered, 1);
}

/// `Output::to_json` (sonic-rs) writes exactly serde_json's bytes: reprocessing after an
/// upgrade must write byte-identical records, and the sinks and the inbox read them with
/// serde_json. Strings with every kind of byte JSON escapes, and floats over the whole range.
#[test]
fn outputs_encode_to_serde_json_bytes() {
    let same = |o: &Output| {
        let want = match o {
            Output::Notification(n) => serde_json::to_vec(n),
            Output::ResponseTime(r) => serde_json::to_vec(r),
            Output::LeadScore(l) => serde_json::to_vec(l),
            Output::SellerMetrics(m) => serde_json::to_vec(m),
            Output::TooLate(_) | Output::OverLimit(_) => return assert_eq!(o.to_json(), None),
        }
        .unwrap();
        let got = o.to_json().expect("an output record");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{o:?}"
        );
    };
    let at: DateTime<Utc> = "2026-03-02T08:00:00.123Z".parse().unwrap();
    let texts = [
        String::new(),
        "Hola, ¿cuánto cuesta? 🙂".to_string(),
        "quote \" backslash \\ slash / tab \t newline \n cr \r".to_string(),
        (0u8..0x20).map(char::from).collect(),
        "\u{7f}\u{2028}\u{2029}\u{fffd}\u{10ffff}".to_string(),
        "a".repeat(1000) + "\"" + &"é".repeat(300),
    ];
    for text in &texts {
        same(&Output::Notification(Notification {
            id: Uuid::from_u128(7),
            tenant_id: u64::MAX,
            kind: NotificationType::HotLead,
            priority: Priority::Urgent,
            audience: Audience::Role {
                role: Role::Manager,
            },
            title: text.clone(),
            message: text.repeat(2),
            data: json!({ "text": text, "n": -1, "x": 0.1, "list": [true, null, text] }),
            actions: vec![Action {
                label: text.clone(),
                action: "open_chat".into(),
                params: json!({ "conversation_id": text }),
            }],
            created_at: at,
            withdraws: Some(Uuid::from_u128(u128::MAX)),
        }));
    }
    // Floats: a fixed list of awkward values, then 20,000 random bit patterns.
    let mut floats = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        1.0 / 3.0,
        1e-7,
        1e-5,
        123_456_789.123,
        1e15,
        1e16,
        1e17,
        1e21,
        1e22,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        -f64::MAX,
        f64::EPSILON,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while floats.len() < 20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            floats.push(f);
        }
    }
    for chunk in floats.chunks(6) {
        let f = |i: usize| chunk[i % chunk.len()];
        same(&Output::LeadScore(LeadScore {
            id: Uuid::from_u128(1),
            tenant_id: 3,
            lead_id: EntityId::from("lead-\"1\""),
            seller_id: None,
            score: f(0),
            source_score: f(1),
            engagement_score: f(2),
            recency_score: f(3),
            intent_score: f(4),
            location_score: f(5),
            cause_event_id: Uuid::from_u128(2),
            computed_at: at,
            status_change: Some(LeadStatus::Converted),
        }));
        same(&Output::ResponseTime(ResponseTimeSample {
            id: Uuid::from_u128(3),
            tenant_id: 3,
            conversation_id: EntityId::from("c\n1"),
            seller_id: 1010,
            customer_event_id: Uuid::from_u128(4),
            reply_event_id: Uuid::from_u128(5),
            waiting_since: at,
            replied_at: at,
            response_seconds: f(0),
            retracts: None,
        }));
    }
    let stats = ResponseTimeStats {
        count: 3,
        mean_seconds: Some(12.5),
        p50_seconds: None,
        p90_seconds: Some(1e-3),
        max_seconds: Some(7200.0),
    };
    same(&Output::SellerMetrics(Box::new(SellerMetrics {
        id: Uuid::from_u128(6),
        tenant_id: 3,
        seller_id: 1010,
        snapshot_at: at,
        time_zone: "America/Bogota".into(),
        day: at.date_naive(),
        conversations_total: 4,
        conversations_active: 3,
        conversations_today: 2,
        conversations_unanswered: 1,
        response_1h: stats.clone(),
        response_today: ResponseTimeStats::default(),
        response_7d: stats.clone(),
        total_chat_seconds: 1234.567,
        waits_received: 9,
        waits_answered: 8,
        engagement_rate: Some(8.0 / 9.0),
        leads_generated: 5,
        leads_converted: 1,
        conversion_rate: None,
        leads_generated_today: 2,
        leads_converted_today: 0,
        hot_leads: 1,
        messages_last_hour: 40,
        activity_level: ActivityLevel::High,
        productivity_score: 7.25,
        rank: 1,
        sellers_ranked: 20,
        team: Some(TeamResponseTimes {
            response_1h: stats.clone(),
            response_today: stats.clone(),
            response_7d: ResponseTimeStats::default(),
        }),
    })));
    same(&Output::TooLate(TooLate {
        event_id: Uuid::from_u128(8),
        tenant_id: 3,
        occurred_at: at,
        cutoff: at,
    }));
}

/// A non-finite float (which no rule should produce) is written as serde_json writes it,
/// `null`, rather than refusing the record.
#[test]
fn non_finite_floats_encode_as_serde_json_does() {
    let at: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().unwrap();
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let sample = ResponseTimeSample {
            id: Uuid::from_u128(3),
            tenant_id: 3,
            conversation_id: EntityId::from("c1"),
            seller_id: 1010,
            customer_event_id: Uuid::from_u128(4),
            reply_event_id: Uuid::from_u128(5),
            waiting_since: at,
            replied_at: at,
            response_seconds: f,
            retracts: None,
        };
        assert_eq!(
            Output::ResponseTime(sample.clone()).to_json().unwrap(),
            serde_json::to_vec(&sample).unwrap()
        );
    }
}

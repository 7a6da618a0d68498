//! The inbox against both dialects: SQLite (a temporary file, always) and PostgreSQL (the
//! database named by `VIGIA_TEST_POSTGRES_URL`; skipped with a message when it is unset).
//!
//! Every PostgreSQL run uses fresh random tenant ids, so it can share a database with earlier
//! runs.

mod common;

use common::*;
use uuid::Uuid;
use vigia_gateway::{can_see, Inbox, Preferences, Role, Viewer};
use vigia_schemas::{Audience, Notification};

fn fresh_tenant() -> u64 {
    // Random, positive, far from the small ids other tests use.
    1_000_000 + (Uuid::new_v4().as_u128() % 1_000_000_000) as u64
}

fn viewer(tenant_id: u64, user_id: u64, role: Role) -> Viewer {
    Viewer {
        tenant_id,
        user_id,
        role,
    }
}

fn list_ids(page: &[vigia_gateway::StoredNotification]) -> Vec<Uuid> {
    page.iter().map(|s| s.notification.id).collect()
}

/// The channel outbox: deliveries recorded with their notification (and only then), due ones
/// taken oldest first, outcomes recorded; and the reload of recent notifications by type.
async fn exercise_outbox(inbox: &Inbox, tenant_id: u64) {
    use chrono::{Duration, Utc};
    use vigia_gateway::OutboxEntry;
    use vigia_schemas::NotificationType;
    let now = Utc::now();
    let entry = |channel, recipient: &str, not_before| OutboxEntry {
        channel,
        recipient: recipient.to_string(),
        user_id: (channel == "email").then_some(1001),
        not_before,
    };
    let mut n = to_role(tenant_id, Role::Ceo);
    n.kind = NotificationType::PerformanceAlert;
    let later = now + Duration::hours(1);
    let deliveries = [
        entry("email", "ceo@example.com", now - Duration::seconds(1)),
        entry("email", "gerente@example.com", later),
        entry("slack", "hook-1", now - Duration::seconds(2)),
    ];
    let inserted = inbox
        .insert_with_deliveries(&n, &deliveries)
        .await
        .unwrap()
        .expect("new");
    assert_eq!(inserted.deliveries, 3);
    // Stored again (a replay): nothing, and no delivery twice.
    assert!(inbox
        .insert_with_deliveries(&n, &deliveries)
        .await
        .unwrap()
        .is_none());
    assert_eq!(inbox.outbox(tenant_id).await.unwrap().len(), 3);

    // E-mail: only the due one; any recipient.
    let lease = std::time::Duration::from_secs(60);
    let claim = |channel: &'static str, recipient: Option<&'static str>, at| {
        inbox.outbox_claim_due(tenant_id, channel, recipient, at, "me", lease)
    };
    let due = claim("email", None, now).await.unwrap().expect("one due");
    assert_eq!(due.recipient, "ceo@example.com");
    assert_eq!(due.attempts, 0);
    assert_eq!(due.notification.as_ref().unwrap(), &n);
    // A webhook's worker takes only its own recipient.
    assert!(claim("slack", Some("hook-2"), now).await.unwrap().is_none());
    let hook = claim("slack", Some("hook-1"), now)
        .await
        .unwrap()
        .expect("the hook's");
    // Leased: nobody takes it again meanwhile.
    assert!(claim("slack", Some("hook-1"), now).await.unwrap().is_none());
    // A failed attempt moves it later (and ends the lease); then it is sent.
    let retry_at = now + Duration::seconds(30);
    assert!(inbox
        .outbox_mark_retry(hook.id, "me", 1, retry_at, "HTTP 503")
        .await
        .unwrap());
    assert!(claim("slack", Some("hook-1"), now).await.unwrap().is_none());
    let next = inbox
        .outbox_next_time(tenant_id, "slack", Some("hook-1"))
        .await
        .unwrap()
        .expect("pending");
    assert_eq!(next.timestamp_millis(), retry_at.timestamp_millis());
    let hook = claim("slack", Some("hook-1"), retry_at)
        .await
        .unwrap()
        .expect("due again");
    assert_eq!(hook.attempts, 1);
    assert!(!inbox.outbox_mark_sent(hook.id, "not-me", 2).await.unwrap());
    assert!(inbox.outbox_mark_sent(hook.id, "me", 2).await.unwrap());
    assert!(inbox
        .outbox_mark_failed(due.id, "me", 1, "550 no such user")
        .await
        .unwrap());
    assert_eq!(
        inbox
            .outbox_next_time(tenant_id, "email", None)
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis()),
        "only the deferred one is left"
    );
    assert_eq!(
        inbox
            .outbox_next_time(tenant_id, "slack", None)
            .await
            .unwrap(),
        None
    );
    let rows = inbox.outbox(tenant_id).await.unwrap();
    let states: Vec<(&str, &str, &str, u32, Option<u64>)> = rows
        .iter()
        .map(|r| {
            (
                r.channel.as_str(),
                r.recipient.as_str(),
                r.state.as_str(),
                r.attempts,
                r.user_id,
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("email", "ceo@example.com", "failed", 1, Some(1001)),
            ("email", "gerente@example.com", "pending", 0, Some(1001)),
            ("slack", "hook-1", "sent", 2, None),
        ]
    );
    assert_eq!(rows[0].last_error.as_deref(), Some("550 no such user"));
    assert_eq!(rows[2].last_error, None);
    assert!(rows.iter().all(|r| r.notification_id == n.id));
    let pending = inbox.outbox_pending().await.unwrap();
    assert!(pending.contains(&(tenant_id, "email".into(), "gerente@example.com".into(), 1)));
    assert!(!pending.iter().any(|p| p.0 == tenant_id && p.1 == "slack"));

    // An instance that dies holding a lease: the row is taken over once the lease is over, and
    // the dead holder's outcome no longer counts.
    let mut m = to_role(tenant_id, Role::Ceo);
    m.kind = NotificationType::PerformanceAlert;
    inbox
        .insert_with_deliveries(&m, &[entry("teams", "hook-9", now)])
        .await
        .unwrap();
    let short = std::time::Duration::from_millis(500);
    let take = |owner: &'static str, at| {
        inbox.outbox_claim_due(tenant_id, "teams", Some("hook-9"), at, owner, short)
    };
    let dying = take("dies", now).await.unwrap().expect("due");
    assert!(take("survivor", now + Duration::milliseconds(499))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        inbox
            .outbox_next_time(tenant_id, "teams", Some("hook-9"))
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis() + 500),
        "due again when the lease ends"
    );
    let taken = take("survivor", now + Duration::milliseconds(500))
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(taken.id, dying.id);
    assert!(!inbox.outbox_mark_sent(dying.id, "dies", 1).await.unwrap());
    assert!(inbox
        .outbox_mark_sent(taken.id, "survivor", 1)
        .await
        .unwrap());
    // Released without an outcome (shutdown mid-attempt): due again at once.
    let mut r = to_role(tenant_id, Role::Ceo);
    r.kind = NotificationType::PerformanceAlert;
    inbox
        .insert_with_deliveries(&r, &[entry("teams", "hook-8", now)])
        .await
        .unwrap();
    let held = inbox
        .outbox_claim_due(tenant_id, "teams", Some("hook-8"), now, "a", lease)
        .await
        .unwrap()
        .unwrap();
    inbox.outbox_release(held.id, "a").await.unwrap();
    assert!(inbox
        .outbox_claim_due(tenant_id, "teams", Some("hook-8"), now, "b", lease)
        .await
        .unwrap()
        .is_some());

    // Sent rows are deleted once older than the retention; failed and pending ones stay.
    let sent_before =
        |rows: &[vigia_gateway::OutboxRow]| rows.iter().filter(|r| r.state == "sent").count();
    assert_eq!(sent_before(&inbox.outbox(tenant_id).await.unwrap()), 2);
    inbox
        .outbox_delete_sent_before(now - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        sent_before(&inbox.outbox(tenant_id).await.unwrap()),
        2,
        "recent: kept"
    );
    assert!(
        inbox
            .outbox_delete_sent_before(Utc::now() + Duration::seconds(1))
            .await
            .unwrap()
            >= 2
    );
    let left = inbox.outbox(tenant_id).await.unwrap();
    assert_eq!(sent_before(&left), 0);
    assert!(left.iter().any(|r| r.state == "failed"));
    assert!(left.iter().any(|r| r.state == "pending"));

    // A notification whose withdrawal came first queues nothing.
    let mut original = to_role(tenant_id, Role::Ceo);
    original.kind = NotificationType::PerformanceAlert;
    let mut withdrawal = to_role(tenant_id, Role::Ceo);
    withdrawal.withdraws = Some(original.id);
    inbox.insert(&withdrawal).await.unwrap();
    let late = inbox
        .insert_with_deliveries(&original, &[entry("slack", "hook-1", now)])
        .await
        .unwrap()
        .unwrap();
    assert!(late.already_withdrawn);
    assert_eq!(late.deliveries, 0);
    assert!(!inbox
        .outbox(tenant_id)
        .await
        .unwrap()
        .iter()
        .any(|r| r.notification_id == original.id));

    // The recent notifications of a type, by creation time, in arrival order.
    let mut old = to_user(tenant_id, 10);
    old.created_at = now - Duration::days(8);
    let mut recent = to_user(tenant_id, 10);
    recent.created_at = now - Duration::minutes(5);
    inbox.insert(&old).await.unwrap();
    inbox.insert(&recent).await.unwrap();
    let reloaded = inbox
        .recent_of_type(
            NotificationType::UnansweredConversation,
            now - Duration::days(7),
        )
        .await
        .unwrap();
    assert!(reloaded.contains(&recent));
    assert!(!reloaded.contains(&old));
    assert!(reloaded
        .iter()
        .all(|n| n.kind == NotificationType::UnansweredConversation));
}

/// Everything the inbox promises, on whatever database `url` names.
/// Preferences: role defaults until saved, then what was saved, per (tenant, user).
async fn exercise_preferences(inbox: &Inbox, tenant_id: u64) {
    let seller = Viewer {
        tenant_id,
        user_id: 10,
        role: Role::Seller,
    };
    assert_eq!(
        inbox.preferences(&seller).await.unwrap(),
        Preferences::for_role(Role::Seller)
    );
    let saved = Preferences::for_role(Role::Seller)
        .updated(
            &serde_json::json!({"time_zone": "America/Bogota", "min_priority": "urgent",
            "quiet_hours": {"start": "22:00", "end": "07:00"}}),
        )
        .unwrap();
    inbox.set_preferences(&seller, &saved).await.unwrap();
    assert_eq!(inbox.preferences(&seller).await.unwrap(), saved);
    let again = Preferences {
        email: true,
        ..saved
    };
    inbox.set_preferences(&seller, &again).await.unwrap();
    assert_eq!(inbox.preferences(&seller).await.unwrap(), again);
    let other_tenant = Viewer {
        tenant_id: tenant_id + 1,
        ..seller
    };
    assert_eq!(
        inbox.preferences(&other_tenant).await.unwrap(),
        Preferences::for_role(Role::Seller)
    );
}

async fn exercise(url: &str) {
    let inbox = Inbox::connect(url)
        .await
        .expect("inbox connects and migrates");
    let t1 = fresh_tenant();
    let t2 = t1 + 1;
    exercise_preferences(&inbox, t1).await;
    exercise_outbox(&inbox, fresh_tenant()).await;

    // A mix of audiences over two tenants.
    let mut all: Vec<Notification> = vec![];
    for tenant in [t1, t2] {
        for audience in [
            Audience::User { user_id: 10 },
            Audience::User { user_id: 11 },
            Audience::Role { role: Role::Seller },
            Audience::Role {
                role: Role::Secretary,
            },
            Audience::Role {
                role: Role::Supervisor,
            },
            Audience::Role { role: Role::Ceo },
            Audience::User { user_id: 10 },
        ] {
            let n = notification(tenant, audience);
            assert!(inbox.insert_if_new(&n).await.unwrap());
            all.push(n);
        }
    }
    // Insert-if-new: a second insert is recognised.
    assert!(!inbox.insert_if_new(&all[0]).await.unwrap());
    assert_eq!(inbox.insert(&all[1]).await.unwrap(), None);

    // What the SQL selects is exactly what the audience rules allow, newest first.
    let viewers = [
        viewer(t1, 10, Role::Seller),
        viewer(t1, 11, Role::Seller),
        viewer(t1, 20, Role::Secretary),
        viewer(t1, 30, Role::Supervisor),
        viewer(t1, 1, Role::Ceo),
        viewer(t1, 2, Role::Manager),
        viewer(t2, 10, Role::Seller),
        viewer(t2, 1, Role::Ceo),
    ];
    for v in &viewers {
        let mut expected: Vec<Uuid> = all
            .iter()
            .filter(|n| can_see(v, n.tenant_id, &n.audience))
            .map(|n| n.id)
            .collect();
        expected.reverse();
        let listed = inbox.list(v, None, 100).await.unwrap();
        assert_eq!(list_ids(&listed), expected, "{v:?}");
        assert!(listed.windows(2).all(|w| w[0].sequence > w[1].sequence));
        assert_eq!(
            inbox.unread_count(v).await.unwrap(),
            expected.len() as u64,
            "{v:?}"
        );
        // "since" is the same set, oldest first.
        let oldest = listed.last().unwrap().sequence;
        let since = inbox.since(v, oldest - 1, 100).await.unwrap();
        expected.reverse();
        assert_eq!(list_ids(&since), expected, "{v:?}");
        let since_after_first = inbox.since(v, oldest, 100).await.unwrap();
        assert_eq!(list_ids(&since_after_first), expected[1..], "{v:?}");
    }

    // Paging by sequence.
    let seller = viewer(t1, 10, Role::Seller);
    let everything = inbox.list(&seller, None, 100).await.unwrap();
    let first_two = inbox.list(&seller, None, 2).await.unwrap();
    assert_eq!(first_two, everything[..2]);
    let rest = inbox
        .list(&seller, Some(first_two[1].sequence), 100)
        .await
        .unwrap();
    assert_eq!(rest, everything[2..]);

    // Mark read: own and visible only.
    let own = &all[0];
    let someone_elses = &all[1];
    let other_tenant = &all[7];
    assert!(inbox.mark_read(&seller, own.id).await.unwrap());
    assert!(!inbox.mark_read(&seller, someone_elses.id).await.unwrap());
    assert!(!inbox.mark_read(&seller, other_tenant.id).await.unwrap());
    assert!(!inbox.mark_read(&seller, Uuid::new_v4()).await.unwrap());
    let seller_visible = everything.len() as u64;
    assert_eq!(
        inbox.unread_count(&seller).await.unwrap(),
        seller_visible - 1
    );
    let listed = inbox.list(&seller, None, 100).await.unwrap();
    assert!(listed
        .iter()
        .all(|s| s.read == (s.notification.id == own.id)));
    // Reading is per user: the CEO, who sees it too, still has it unread.
    let ceo = viewer(t1, 1, Role::Ceo);
    assert_eq!(inbox.unread_count(&ceo).await.unwrap(), 7);

    // Read all, then something new.
    inbox.mark_all_read(&seller).await.unwrap();
    assert_eq!(inbox.unread_count(&seller).await.unwrap(), 0);
    assert!(inbox
        .list(&seller, None, 100)
        .await
        .unwrap()
        .iter()
        .all(|s| s.read));
    let newer = to_user(t1, 10);
    inbox.insert(&newer).await.unwrap().unwrap();
    assert_eq!(inbox.unread_count(&seller).await.unwrap(), 1);
    inbox.mark_all_read(&seller).await.unwrap();
    inbox.mark_all_read(&seller).await.unwrap(); // idempotent
    assert_eq!(inbox.unread_count(&seller).await.unwrap(), 0);

    // Withdrawal: resolves the withdrawn one for its whole audience, is itself never unread.
    let alert = to_user(t1, 11);
    let alert_seq = inbox.insert(&alert).await.unwrap().unwrap().sequence;
    let seller_11 = viewer(t1, 11, Role::Seller);
    let before = inbox.unread_count(&seller_11).await.unwrap();
    let ceo_before = inbox.unread_count(&ceo).await.unwrap();
    let mut answered = to_user(t1, 11);
    answered.withdraws = Some(alert.id);
    let inserted = inbox.insert(&answered).await.unwrap().unwrap();
    assert!(inserted.sequence > alert_seq && !inserted.already_withdrawn);
    assert_eq!(inbox.unread_count(&seller_11).await.unwrap(), before - 1);
    assert_eq!(inbox.unread_count(&ceo).await.unwrap(), ceo_before - 1);
    let listed = inbox.list(&seller_11, None, 2).await.unwrap();
    assert_eq!(list_ids(&listed), vec![answered.id, alert.id]);
    assert!(listed[0].read && !listed[0].withdrawn);
    assert!(listed[1].read && listed[1].withdrawn);
    assert_eq!(listed[0].notification.withdraws, Some(alert.id));

    // A withdrawal never crosses tenants.
    let t2_alert = to_user(t2, 11);
    inbox.insert(&t2_alert).await.unwrap().unwrap();
    let mut foreign = to_user(t1, 11);
    foreign.withdraws = Some(t2_alert.id);
    inbox.insert(&foreign).await.unwrap().unwrap();
    let t2_listed = inbox
        .list(&viewer(t2, 11, Role::Seller), None, 1)
        .await
        .unwrap();
    assert_eq!(t2_listed[0].notification.id, t2_alert.id);
    assert!(!t2_listed[0].withdrawn && !t2_listed[0].read);

    // A withdrawal that arrives first: the original is stored resolved.
    let late = to_user(t1, 11);
    let mut early = to_user(t1, 11);
    early.withdraws = Some(late.id);
    inbox.insert(&early).await.unwrap().unwrap();
    let count = inbox.unread_count(&seller_11).await.unwrap();
    let inserted = inbox.insert(&late).await.unwrap().unwrap();
    assert!(inserted.already_withdrawn);
    assert_eq!(inbox.unread_count(&seller_11).await.unwrap(), count);

    // Clear: hidden (and read) for this user only; newer ones show.
    inbox.clear(&seller_11).await.unwrap();
    assert!(inbox.list(&seller_11, None, 100).await.unwrap().is_empty());
    assert!(inbox.since(&seller_11, 0, 100).await.unwrap().is_empty());
    assert_eq!(inbox.unread_count(&seller_11).await.unwrap(), 0);
    assert!(!inbox.list(&ceo, None, 100).await.unwrap().is_empty());
    let after_clear = to_user(t1, 11);
    inbox.insert(&after_clear).await.unwrap().unwrap();
    assert_eq!(
        list_ids(&inbox.list(&seller_11, None, 100).await.unwrap()),
        vec![after_clear.id]
    );
    assert_eq!(inbox.unread_count(&seller_11).await.unwrap(), 1);

    // The stored JSON is the notification, byte for byte in meaning.
    let stored = inbox.list(&seller_11, None, 1).await.unwrap();
    assert_eq!(stored[0].notification, after_clear);

    // It persists, and migrating again is a no-op.
    drop(inbox);
    let reopened = Inbox::connect(url).await.expect("inbox reopens");
    assert!(reopened.ping().await);
    assert_eq!(
        list_ids(&reopened.list(&seller_11, None, 100).await.unwrap()),
        vec![after_clear.id]
    );
    assert!(!reopened.insert_if_new(&after_clear).await.unwrap());
}

#[tokio::test]
async fn inbox_on_sqlite() {
    let dir = TempDir::new();
    exercise(&dir.sqlite_url()).await;
}

#[tokio::test]
async fn inbox_on_sqlite_creates_the_files_directory() {
    let dir = TempDir::new();
    let url = format!(
        "sqlite://{}/nested/data/gateway.db?mode=rwc",
        dir.0.display()
    );
    let inbox = Inbox::connect(&url).await.unwrap();
    assert!(inbox.ping().await);
    assert!(dir.0.join("nested/data/gateway.db").exists());
}

#[tokio::test]
async fn inbox_on_postgres() {
    let Ok(url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
        println!("skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run");
        return;
    };
    exercise(&url).await;
}

/// Two writers on one PostgreSQL inbox, the lower sequence committed after the higher one: a
/// reader that resumes after the highest sequence it saw must still get the lower one. (Without
/// the inbox's insert lock the second writer commits at once, the reader sees only the higher
/// sequence and, resuming after it, never the lower: this test fails.)
#[tokio::test]
async fn since_has_no_gap_when_a_lower_sequence_commits_last() {
    let Ok(url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
        println!("skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run");
        return;
    };
    let (first_writer, second_writer, reader) = (
        Inbox::connect(&url).await.unwrap(),
        Inbox::connect(&url).await.unwrap(),
        Inbox::connect(&url).await.unwrap(),
    );
    let tenant_id = fresh_tenant();
    let ceo = viewer(tenant_id, 1, Role::Ceo);
    let (lower, higher) = (to_user(tenant_id, 10), to_user(tenant_id, 11));
    // The first writer takes its sequence and does not commit yet.
    let pending = first_writer.store_uncommitted(&lower).await.unwrap();
    let lower_seq = pending.inserted.expect("new").sequence;
    let second = tokio::spawn(async move { second_writer.insert(&higher).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second writer waits for the first to commit"
    );
    // A client reads what is visible now and remembers the highest sequence it saw.
    let seen_first = reader.since(&ceo, 0, 100).await.unwrap();
    let cursor = seen_first.iter().map(|s| s.sequence).max().unwrap_or(0);
    pending.commit().await.unwrap();
    let higher_seq = second.await.unwrap().unwrap().expect("new").sequence;
    assert!(higher_seq > lower_seq);
    // It resumes after that sequence.
    let seen_after = reader.since(&ceo, cursor, 100).await.unwrap();
    let mut seen: Vec<i64> = seen_first
        .iter()
        .chain(&seen_after)
        .map(|s| s.sequence)
        .collect();
    seen.sort();
    assert_eq!(seen, vec![lower_seq, higher_seq], "no gap, nothing twice");
}

#[tokio::test]
async fn an_unsupported_or_unreachable_database_is_a_clear_error() {
    let err = Inbox::connect("mysql://u:secret@localhost/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sqlite://") && !err.contains("secret"),
        "{err}"
    );
    let err = Inbox::connect("postgres://u:secret@127.0.0.1:1/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VIGIA_DATABASE_URL") && !err.contains("secret"),
        "{err}"
    );
}

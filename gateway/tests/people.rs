//! The people directory: names from `user.upserted`, stored in the inbox database, latest by
//! event time whatever the order or the number of writers, never across tenants; `GET
//! /v1/people` per role; and the consumer that fills it from the `events` topic (real Kafka),
//! with two gateway instances sharing one PostgreSQL database.
//!
//! PostgreSQL runs use a database of their own, created on the server named by
//! `VIGIA_TEST_POSTGRES_URL` and dropped at the end (skipped with a message when it is unset):
//! the migrations of this branch must not be applied to a database that other versions of the
//! gateway share (sqlx refuses to start on a database with a migration it does not know).
//! The Kafka test needs a broker (`VIGIA_TEST_KAFKA_BROKERS`, default 127.0.0.1:9092):
//! `cargo test -p vigia-gateway --test people -- --include-ignored`.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use prometheus_client::registry::Registry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vigia_gateway::{Config, Gateway, Inbox, Person, PersonUpsert, Role};
use vigia_schemas::Topics;

fn fresh_tenant() -> u64 {
    1_000_000 + (Uuid::new_v4().as_u128() % 1_000_000_000) as u64
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0).unwrap()
}

fn upsert(tenant_id: u64, user_id: u64, name: &str, at: DateTime<Utc>) -> PersonUpsert {
    PersonUpsert {
        tenant_id,
        user_id,
        name: name.to_string(),
        role: Role::Seller,
        at,
        event_id: Uuid::new_v4(),
    }
}

fn names(people: &[Person]) -> Vec<(u64, &str)> {
    people
        .iter()
        .map(|p| (p.user_id, p.name.as_str()))
        .collect()
}

/// A database of its own on the PostgreSQL server of `VIGIA_TEST_POSTGRES_URL`, dropped when
/// dropped.
struct OwnDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl OwnDatabase {
    async fn create() -> Option<OwnDatabase> {
        let Ok(url) = std::env::var("VIGIA_TEST_POSTGRES_URL") else {
            println!(
                "skipped: set VIGIA_TEST_POSTGRES_URL=postgres://user:pass@host:port/db to run"
            );
            return None;
        };
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let name = format!("vigia_people_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&url)
            .await
            .expect("VIGIA_TEST_POSTGRES_URL answers");
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .expect("the test may create a database");
        conn.close().await.unwrap();
        let (server, _db) = url.rsplit_once('/').unwrap();
        Some(OwnDatabase {
            admin_url: url.clone(),
            url: format!("{server}/{name}"),
            name,
        })
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside the test's runtime: a thread with its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    use sqlx::{Connection, Executor};
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                        let _ = conn
                            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))))
                            .await;
                    }
                })
        })
        .join();
    }
}

/// The directory's rules, on either dialect.
async fn exercise(inbox: &Inbox) {
    let (tenant, other_tenant) = (fresh_tenant(), fresh_tenant());
    assert_eq!(
        inbox.person(tenant, 1014).await.unwrap(),
        None,
        "never seen"
    );
    assert!(inbox.people(tenant).await.unwrap().is_empty());

    let first = upsert(tenant, 1014, "Vendedor 1-0", at(10));
    assert!(inbox.upsert_person(&first).await.unwrap(), "new");
    assert!(
        !inbox.upsert_person(&first).await.unwrap(),
        "the same event again changes nothing"
    );
    let ceo = PersonUpsert {
        role: Role::Ceo,
        ..upsert(tenant, 1001, "Dirección <General>", at(5))
    };
    assert!(inbox.upsert_person(&ceo).await.unwrap());
    assert_eq!(
        inbox.person(tenant, 1001).await.unwrap(),
        Some(Person {
            user_id: 1001,
            name: "Dirección <General>".into(),
            role: Role::Ceo
        }),
        "stored as given (escaping is the page's job)"
    );

    // A rename (later in event time) wins; an older event, arriving after it, does not.
    assert!(inbox
        .upsert_person(&upsert(tenant, 1014, "Ana María", at(20)))
        .await
        .unwrap());
    assert!(!inbox
        .upsert_person(&upsert(tenant, 1014, "Nombre viejo", at(15)))
        .await
        .unwrap());
    assert_eq!(
        inbox.person(tenant, 1014).await.unwrap().unwrap().name,
        "Ana María"
    );

    // Two events at the same instant: the larger event id wins, in either order.
    let low = PersonUpsert {
        event_id: Uuid::from_u128(1),
        ..upsert(tenant, 1015, "Bajo", at(30))
    };
    let high = PersonUpsert {
        event_id: Uuid::from_u128(u128::MAX - 1),
        ..upsert(tenant, 1015, "Alto", at(30))
    };
    assert!(inbox.upsert_person(&high).await.unwrap());
    assert!(!inbox.upsert_person(&low).await.unwrap());
    for p in [&low, &high] {
        let p = PersonUpsert {
            user_id: 1016,
            ..p.clone()
        };
        assert!(inbox.upsert_person(&p).await.unwrap());
    }
    assert_eq!(
        inbox.person(tenant, 1015).await.unwrap().unwrap().name,
        "Alto"
    );
    assert_eq!(
        inbox.person(tenant, 1016).await.unwrap().unwrap().name,
        "Alto"
    );

    // Another tenant's user with the same id: its own row, invisible to the first tenant.
    assert!(inbox
        .upsert_person(&upsert(other_tenant, 1014, "Intrusa", at(59)))
        .await
        .unwrap());
    assert_eq!(
        names(&inbox.people(tenant).await.unwrap()),
        vec![
            (1001, "Dirección <General>"),
            (1014, "Ana María"),
            (1015, "Alto"),
            (1016, "Alto")
        ]
    );
    assert_eq!(
        names(&inbox.people(other_tenant).await.unwrap()),
        vec![(1014, "Intrusa")]
    );

    // Many writers at once (several gateway instances), in shuffled order: the latest in event
    // time is what stays.
    let user = 2000;
    let mut writes: Vec<PersonUpsert> = (0..40)
        .map(|i| upsert(tenant, user, &format!("v{i:02}"), at(i)))
        .collect();
    writes.reverse();
    writes.rotate_left(17);
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|w| {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.upsert_person(&w).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        inbox.person(tenant, user).await.unwrap().unwrap().name,
        "v39"
    );

    // An id the database cannot hold is refused, not stored as another.
    let err = inbox
        .upsert_person(&upsert(tenant, u64::MAX, "x", at(1)))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_on_sqlite() {
    let dir = TempDir::new();
    let inbox = Inbox::connect(&dir.sqlite_url()).await.unwrap();
    exercise(&inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_on_postgres() {
    let Some(db) = OwnDatabase::create().await else {
        return;
    };
    let inbox = Inbox::connect(&db.url).await.unwrap();
    exercise(&inbox).await;
}

async fn get_people(gw: &TestGateway, tenant: u64, user: u64, role: Role) -> Value {
    let r = reqwest::Client::new()
        .get(gw.url("/v1/people"))
        .bearer_auth(gw.token(tenant, user, role))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_directory_shows_a_tenant_its_own_people_by_role() {
    let gw = TestGateway::start().await;
    let inbox = gw.gateway.inbox();
    for p in [
        PersonUpsert {
            role: Role::Ceo,
            ..upsert(1, 1001, "Carla", at(0))
        },
        upsert(1, 1010, "Ana", at(0)),
        upsert(1, 1011, "Beto", at(0)),
        upsert(2, 1010, "Intrusa", at(0)),
    ] {
        inbox.upsert_person(&p).await.unwrap();
    }
    let everyone = json!({"people": [
        {"user_id": 1001, "name": "Carla", "role": "ceo"},
        {"user_id": 1010, "name": "Ana", "role": "seller"},
        {"user_id": 1011, "name": "Beto", "role": "seller"},
    ]});
    for role in [Role::Ceo, Role::Manager, Role::Supervisor] {
        assert_eq!(get_people(&gw, 1, 1001, role).await, everyone, "{role:?}");
    }
    // Anyone else: only themselves (or nobody, without a name).
    assert_eq!(
        get_people(&gw, 1, 1011, Role::Seller).await,
        json!({"people": [{"user_id": 1011, "name": "Beto", "role": "seller"}]})
    );
    assert_eq!(
        get_people(&gw, 1, 1099, Role::Secretary).await,
        json!({"people": []})
    );
    // Tenant 2 sees its own 1010, never tenant 1's names.
    assert_eq!(
        get_people(&gw, 2, 2001, Role::Ceo).await,
        json!({"people": [{"user_id": 1010, "name": "Intrusa", "role": "seller"}]})
    );
    let anonymous = reqwest::get(gw.url("/v1/people")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// The report page names its top performers by the directory (the tenant's own), escaped;
/// one without a name anywhere by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_names_top_performers_from_the_directory() {
    use vigia_schemas::{derive_id, Audience, NotificationType, Priority};
    let gw = TestGateway::start().await;
    let day = "2026-03-02";
    let report = vigia_schemas::Notification {
        id: derive_id("notification/daily_report", &["1", day]),
        tenant_id: 1,
        kind: NotificationType::DailyReport,
        priority: Priority::Low,
        audience: Audience::Role { role: Role::Ceo },
        title: format!("Informe diario del {day}"),
        message: "Ayer".into(),
        data: json!({"day": day, "time_zone": "UTC", "team": {}, "alerts": {},
                     "top_performers": [{"seller_id": 1010, "productivity_score": 9.0},
                                        {"seller_id": 1011, "productivity_score": 8.0}]}),
        actions: vec![],
        created_at: Utc::now(),
        withdraws: None,
    };
    gw.gateway.deliver(report).await.unwrap();
    let inbox = gw.gateway.inbox();
    inbox
        .upsert_person(&upsert(1, 1010, "Ana <b>López</b>", at(0)))
        .await
        .unwrap();
    inbox
        .upsert_person(&upsert(2, 1011, "Intrusa", at(0)))
        .await
        .unwrap();
    let html = reqwest::Client::new()
        .get(gw.url(&format!("/reports/{day}")))
        .bearer_auth(gw.token(1, 1001, Role::Ceo))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<td>1</td><td>Ana &lt;b&gt;López&lt;/b&gt;</td>"),
        "{html}"
    );
    assert!(html.contains("<td>2</td><td>#1011</td>"), "{html}");
    assert!(!html.contains("Intrusa") && !html.contains("<b>"), "{html}");
}

fn brokers() -> String {
    std::env::var("VIGIA_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn kafka_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

/// A record of the events topic as ingest writes it (`event_type` header unless `None`).
async fn produce(producer: &FutureProducer, topic: &str, kind: Option<&str>, payload: &[u8]) {
    let mut record = FutureRecord::to(topic).key("1").payload(payload);
    if let Some(kind) = kind {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: "event_type",
            value: Some(kind),
        }));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic} at {}: {e}", brokers()));
}

fn user_upserted(tenant: u64, user: u64, name: &str, occurred_at: DateTime<Utc>) -> Vec<u8> {
    json!({"event_id": Uuid::new_v4(), "tenant_id": tenant, "occurred_at": occurred_at,
           "type": "user.upserted", "user_id": user, "name": name, "role": "seller"})
    .to_string()
    .into_bytes()
}

async fn start(cfg: Config, topics: &Topics) -> (Gateway, Registry, CancellationToken) {
    let mut registry = Registry::default();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(
        cfg,
        &kafka_config(),
        topics,
        &mut registry,
        shutdown.clone(),
    )
    .await
    .expect("gateway starts");
    (gateway, registry, shutdown)
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.rsplit_once(' ')?;
            (metric == name).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

async fn wait_for_name(inbox: &Inbox, tenant: u64, user: u64, name: &str) {
    for _ in 0..300 {
        if inbox
            .person(tenant, user)
            .await
            .unwrap()
            .is_some_and(|p| p.name == name)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{user} of tenant {tenant} never got the name {name:?} (has {:?})",
        inbox.person(tenant, user).await.unwrap()
    );
}

/// Names travel from the `events` topic into the directory of two gateway instances sharing
/// one PostgreSQL database (one consumer group between them: each record stored once, by
/// whichever instance holds its partition), other events are passed over by their header, and
/// a restarted instance resumes after what it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker at VIGIA_TEST_KAFKA_BROKERS and VIGIA_TEST_POSTGRES_URL"]
async fn names_come_from_the_events_topic_into_the_shared_directory() {
    let Some(db) = OwnDatabase::create().await else {
        return;
    };
    let topics = Topics::with_prefix(&format!("gwpeople-{}.", Uuid::new_v4().simple()));
    let admin: AdminClient<DefaultClientContext> = kafka_config().create().unwrap();
    let created = admin
        .create_topics(
            &[
                NewTopic::new(&topics.events, 4, TopicReplication::Fixed(1)),
                NewTopic::new(&topics.notifications, 1, TopicReplication::Fixed(1)),
                NewTopic::new(&topics.seller_metrics, 1, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot create a topic at {}: {e}", brokers()));
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let cfg = Config {
        jwt_secret: SECRET.into(),
        database_url: db.url.clone(),
        group_id: format!("gwpeople-{}", Uuid::new_v4().simple()),
        ..Config::default()
    };
    let (a, registry_a, stop_a) = start(cfg.clone(), &topics).await;
    let (b, registry_b, stop_b) = start(cfg.clone(), &topics).await;

    let producer: FutureProducer = kafka_config().create().unwrap();
    let tenant = fresh_tenant();
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    // Keyed by user, so that the records spread over the partitions both instances hold.
    for (i, user) in [1010u64, 1011, 1012, 1013].into_iter().enumerate() {
        let payload = user_upserted(tenant, user, &format!("Vendedor {i}"), t0);
        producer
            .send(
                FutureRecord::to(&topics.events)
                    .key(&user.to_string())
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "event_type",
                        value: Some("user.upserted"),
                    })),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce: {e}"));
    }
    // Without the header (another producer): decoded, and taken.
    produce(
        &producer,
        &topics.events,
        None,
        &user_upserted(tenant, 1001, "Carla", t0),
    )
    .await;
    // Other events: their header says so, they are not even decoded (this one would not be).
    produce(
        &producer,
        &topics.events,
        Some("message.received"),
        b"not json at all",
    )
    .await;
    // Not an event, and no header: counted and skipped, nothing stalls behind it.
    produce(
        &producer,
        &topics.events,
        None,
        b"{\"type\": \"user.upserted\"}",
    )
    .await;
    for (user, name) in [
        (1010, "Vendedor 0"),
        (1011, "Vendedor 1"),
        (1012, "Vendedor 2"),
        (1013, "Vendedor 3"),
        (1001, "Carla"),
    ] {
        wait_for_name(a.inbox(), tenant, user, name).await;
        wait_for_name(b.inbox(), tenant, user, name).await;
    }
    let stored = metric(&registry_a, "vigia_gateway_people_stored_total")
        + metric(&registry_b, "vigia_gateway_people_stored_total");
    assert_eq!(
        stored, 5.0,
        "each name stored once between the two instances"
    );
    let undecodable = metric(&registry_a, "vigia_gateway_people_undecodable_total")
        + metric(&registry_b, "vigia_gateway_people_undecodable_total");
    assert_eq!(undecodable, 1.0, "only the headerless garbage was decoded");

    // One instance goes; a rename and a stale name come; the other takes over its partitions.
    // A new instance goes on from the group's offsets (and what it may read again changes
    // nothing).
    stop_a.cancel();
    produce(
        &producer,
        &topics.events,
        Some("user.upserted"),
        &user_upserted(tenant, 1010, "Ana María", t0 + chrono::Duration::minutes(5)),
    )
    .await;
    produce(
        &producer,
        &topics.events,
        Some("user.upserted"),
        &user_upserted(
            tenant,
            1011,
            "Nombre viejo",
            t0 - chrono::Duration::minutes(5),
        ),
    )
    .await;
    wait_for_name(b.inbox(), tenant, 1010, "Ana María").await;
    stop_b.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (c, registry_c, stop_c) = start(cfg, &topics).await;
    produce(
        &producer,
        &topics.events,
        Some("user.upserted"),
        &user_upserted(tenant, 1012, "Tercero", t0 + chrono::Duration::minutes(6)),
    )
    .await;
    wait_for_name(c.inbox(), tenant, 1012, "Tercero").await;
    assert_eq!(
        c.inbox().person(tenant, 1011).await.unwrap().unwrap().name,
        "Vendedor 1",
        "an older name never replaces a newer one"
    );
    assert_eq!(
        metric(&registry_c, "vigia_gateway_people_stored_total"),
        1.0,
        "only the new name counts as stored"
    );
    stop_c.cancel();
    drop(db);
}

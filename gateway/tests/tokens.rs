//! Token policy beyond the signature: a maximum lifetime (a leaked token is only good for so
//! long), and the issuer and audience when they are configured, over REST and `/ws`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn count(gw: &TestGateway, token: &str) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .get(gw.url("/v1/notifications/count"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

const HOUR: u64 = 3600;

#[tokio::test]
async fn tokens_that_live_longer_than_the_maximum_are_refused() {
    let gw = TestGateway::start().await;
    let base = json!({"sub": 10, "tenant_id": 1, "role": "seller"});
    let token = |iat: Option<u64>, exp: u64| {
        let mut c = base.clone();
        c["exp"] = json!(exp);
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        hs256(&c)
    };
    let t = now();
    // Within the default maximum (24 h).
    for ok in [token(Some(t), t + 24 * HOUR), token(None, t + 23 * HOUR)] {
        let (status, body) = count(&gw, &ok).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (too_long, what) in [
        (token(Some(t), t + 48 * HOUR), "issued for 48 h"),
        (token(None, t + 25 * HOUR), "no iat, expires in 25 h"),
        (
            token(Some(t - 47 * HOUR), t + HOUR),
            "issued 47 h ago for 48 h",
        ),
        (token(Some(t), t + 100 * 365 * 24 * HOUR), "a century"),
    ] {
        let (status, body) = count(&gw, &too_long).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body.contains("lifetime"), "{what}: {body}");
        assert!(
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={too_long}", gw.addr))
                .await
                .is_err(),
            "{what} over /ws"
        );
    }

    // The maximum is configurable.
    let gw = TestGateway::start_with(|cfg| cfg.jwt_max_lifetime = Duration::from_secs(HOUR)).await;
    assert_eq!(
        count(&gw, &token(Some(t), t + HOUR)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        count(&gw, &token(Some(t), t + 2 * HOUR)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured_and_only_then() {
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"sub": 10, "tenant_id": 1, "role": "seller", "iat": t, "exp": t + HOUR});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        hs256(&c)
    };
    // Not configured: neither is required, whatever the token carries.
    let open = TestGateway::start().await;
    for extra in [json!({}), json!({"iss": "anyone", "aud": "anything"})] {
        assert_eq!(count(&open, &claims(extra)).await.0, StatusCode::OK);
    }

    let gw = TestGateway::start_with(|cfg| {
        cfg.jwt_issuer = Some("vigia".into());
        cfg.jwt_audience = Some("vigia-gateway".into());
    })
    .await;
    let (status, body) = count(
        &gw,
        &claims(json!({"iss": "vigia", "aud": "vigia-gateway"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (extra, claim) in [
        (json!({"aud": "vigia-gateway"}), "iss"),
        (
            json!({"iss": "someone-else", "aud": "vigia-gateway"}),
            "iss",
        ),
        (json!({"iss": "vigia"}), "aud"),
        (json!({"iss": "vigia", "aud": ["another"]}), "aud"),
    ] {
        let (status, body) = count(&gw, &claims(extra.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{extra}: {body}");
        assert!(body.contains(claim), "{extra}: {body}");
    }
}

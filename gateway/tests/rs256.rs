//! RS256: a gateway given an identity provider's RSA public key accepts the tokens that
//! provider signs, over REST and `/ws`, and nothing else: not a token signed by another key, not
//! an HS256 token forged with the public key as its HMAC secret, and (without a secret) no
//! HS256 at all. Keys are generated for the test with the `openssl` command.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use vigia_gateway::Role;

/// A fresh RSA key pair: (private PEM, path of the public PEM).
fn key_pair(dir: &Path, name: &str) -> (Vec<u8>, std::path::PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command is installed (scripts/install-deps.sh)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (private_s, public_s) = (private.to_str().unwrap(), public.to_str().unwrap());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private_s,
    ]);
    run(&["pkey", "-in", private_s, "-pubout", "-out", public_s]);
    (std::fs::read(&private).unwrap(), public)
}

fn claims(user: u64, tenant: u64) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"sub": user, "tenant_id": tenant, "role": "seller", "exp": now + 3600})
}

fn rs256(private_pem: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(private_pem).unwrap(),
    )
    .unwrap()
}

async fn count(gw: &TestGateway, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(gw.url("/v1/notifications/count"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rs256_tokens_of_the_configured_key_are_accepted_and_nothing_else() {
    let keys = TempDir::new();
    let (provider, provider_pub) = key_pair(&keys.0, "provider");
    let (stranger, _) = key_pair(&keys.0, "stranger");
    let public_pem = std::fs::read(&provider_pub).unwrap();

    let key = provider_pub.clone();
    let gw = TestGateway::start_with(move |cfg| cfg.jwt_rs256_public_key = Some(key)).await;
    let token = rs256(&provider, &claims(10, 1));
    assert_eq!(count(&gw, &token).await.0, StatusCode::OK);
    // The shared secret still works alongside.
    assert_eq!(
        count(&gw, &gw.token(1, 10, Role::Seller)).await.0,
        StatusCode::OK
    );
    // The same token is good for /ws.
    let mut ws = gw.connect_query(&format!("token={token}")).await;
    expect_handshake(&mut ws, 1, 10).await;

    let (status, body) = count(&gw, &rs256(&stranger, &claims(10, 1))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid token signature"))
    );
    // Algorithm confusion: HS256 with the (public) PEM as the HMAC secret.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(10, 1),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(count(&gw, &forged).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = count(&gw, &{
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS512),
            &claims(10, 1),
            &EncodingKey::from_rsa_pem(&provider).unwrap(),
        )
        .unwrap()
    })
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"],
        "token algorithm not accepted: this gateway accepts HS256 and RS256"
    );
}

#[tokio::test]
async fn without_a_secret_only_rs256_is_accepted() {
    let keys = TempDir::new();
    let (provider, provider_pub) = key_pair(&keys.0, "provider");
    let gw = TestGateway::start_with(move |cfg| {
        cfg.jwt_secret = String::new();
        cfg.jwt_rs256_public_key = Some(provider_pub);
    })
    .await;
    assert_eq!(
        count(&gw, &rs256(&provider, &claims(10, 1))).await.0,
        StatusCode::OK
    );
    let (status, body) = count(&gw, &gw.token(1, 10, Role::Seller)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"],
        "token algorithm not accepted: this gateway accepts only RS256"
    );
}

#[tokio::test]
async fn a_missing_or_bad_key_file_is_a_clear_start_up_error() {
    let dir = TempDir::new();
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    for (path, expected) in [
        (dir.0.join("absent.pem"), "cannot read"),
        (garbage, "not an RSA public key"),
    ] {
        let cfg = vigia_gateway::Config {
            jwt_rs256_public_key: Some(path),
            database_url: dir.sqlite_url(),
            ..vigia_gateway::Config::default()
        };
        let err = vigia_gateway::Gateway::start_without_consumer(
            cfg,
            &mut prometheus_client::registry::Registry::default(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .err()
        .expect("refused")
        .to_string();
        assert!(
            err.contains("gateway.jwt_rs256_public_key") && err.contains(expected),
            "{err}"
        );
    }
}

#[tokio::test]
async fn with_an_identity_provider_issuer_and_audience_are_checked() {
    // As configured for an identity provider: its public key, its issuer URL, and the audience
    // it puts in the tokens it issues for this API.
    let keys = TempDir::new();
    let (provider, provider_pub) = key_pair(&keys.0, "provider");
    let gw = TestGateway::start_with(move |cfg| {
        cfg.jwt_secret = String::new();
        cfg.jwt_rs256_public_key = Some(provider_pub);
        cfg.jwt_issuer = Some("https://idp.example.com/".into());
        cfg.jwt_audience = Some("vigia-api".into());
    })
    .await;
    let with = |iss: Option<&str>, aud: Option<Value>| {
        let mut c = claims(10, 1);
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        rs256(&provider, &c)
    };
    let issuer = Some("https://idp.example.com/");
    for aud in [json!("vigia-api"), json!(["other-api", "vigia-api"])] {
        assert_eq!(
            count(&gw, &with(issuer, Some(aud.clone()))).await.0,
            StatusCode::OK,
            "aud {aud}"
        );
    }
    for (token, claim) in [
        (with(None, Some(json!("vigia-api"))), "iss"),
        (
            with(Some("https://evil.example.com/"), Some(json!("vigia-api"))),
            "iss",
        ),
        (with(issuer, None), "aud"),
        (with(issuer, Some(json!("other-api"))), "aud"),
    ] {
        let (status, body) = count(&gw, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(claim), "{claim}: {error}");
    }
    // /ws too.
    let wrong = with(Some("https://evil.example.com/"), Some(json!("vigia-api")));
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={wrong}", gw.addr))
            .await
            .is_err()
    );
}

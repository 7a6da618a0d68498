//! JWT authentication: tokens with claims `sub` (user id: a number or a numeric string),
//! `tenant_id` (number), `role` (ceo|manager|seller|secretary|supervisor) and `exp` (required).
//!
//! HS256 with the shared secret by default; RS256 as well when the gateway is given the RSA
//! public key of an identity provider (`jwt_rs256_public_key`), and RS256 only if it has no
//! secret. Each algorithm is checked with its own key, and any other algorithm is refused, so a
//! client cannot choose a weaker scheme (nor pass an HMAC over the public key as RS256). There
//! is no leeway on `exp`: a token is valid up to its `exp` second, and a live WebSocket is
//! closed at that moment with reason "token expired".
//!
//! Beyond the signature ([`TokenPolicy`]):
//! - **Lifetime**: a token that lives longer than `jwt_max_lifetime` (default 24 h) is refused:
//!   its lifetime is `exp - iat` (`iat` taken as now if absent or in the future), so neither a
//!   far `exp` nor a back-dated `iat` gets a long-lived token in.
//! - **Issuer and audience**, when configured (`jwt_issuer`, `jwt_audience`): the token must
//!   carry that `iss`, and an `aud` that is (or, as an array, contains) that audience. With an
//!   identity provider (RS256), set both: the issuer is the provider's issuer URL (the `iss` of
//!   its tokens, e.g. `https://login.example.com/`), the audience the identifier the provider
//!   gives this API (what it puts in `aud`). Without them, any token the provider signs for any
//!   of its applications would be accepted. `vigia token` puts them in the tokens it mints.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use vigia_schemas::{Role, TenantId, UserId};

use crate::audience::{role_name, Viewer};

/// An authenticated caller: who they are, and until when (`exp`, Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub viewer: Viewer,
    pub expires_at: u64,
}

impl Principal {
    /// The moment the token stops being valid.
    pub fn expires_at_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }
}

/// Why a request was refused; its `Display` is the reason sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <jwt>` (or `?token=<jwt>` on /ws)")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <jwt>`")]
    NotBearer,
    #[error("token expired")]
    Expired,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm not accepted: this gateway accepts {0}")]
    WrongAlgorithm(&'static str),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("invalid token claims: {0}")]
    BadClaims(String),
    #[error(
        "token lifetime too long: it is valid for {lifetime_secs} s, this gateway accepts at most \
         {max_secs} s (gateway.jwt_max_lifetime); ask for a shorter-lived token"
    )]
    LifetimeTooLong { lifetime_secs: u64, max_secs: u64 },
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let reason = self.to_string();
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            reason.replace('"', "'")
        );
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": reason })),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The claims read from a token (`iss` and `aud` are checked by the validation itself).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(deserialize_with = "user_id_from_number_or_string")]
    sub: UserId,
    tenant_id: TenantId,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

fn user_id_from_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<UserId, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| D::Error::custom("sub must be a non-negative integer user id")),
        serde_json::Value::String(s) => s
            .parse()
            .map_err(|_| D::Error::custom(format!("sub must be a numeric user id, not {s:?}"))),
        _ => Err(D::Error::custom(
            "sub must be a user id (number or numeric string)",
        )),
    }
}

fn parse_role(role: &str) -> Result<Role, AuthError> {
    serde_json::from_value(serde_json::Value::String(role.to_string())).map_err(|_| {
        AuthError::BadClaims(format!(
            "unknown role {role:?}: expected ceo, manager, seller, secretary or supervisor"
        ))
    })
}

/// The identity provider's key given for RS256 is not an RSA public key in PEM.
#[derive(Debug, thiserror::Error)]
#[error("not an RSA public key in PEM format: {0}")]
pub struct InvalidRsaKey(#[source] jsonwebtoken::errors::Error);

/// The claims of a token this gateway mints.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    #[serde(flatten)]
    claims: Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// The longest token lifetime accepted unless configured otherwise.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What a token must satisfy besides its signature (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// The `iss` required, if any.
    pub issuer: Option<String>,
    /// The audience `aud` must name, if any.
    pub audience: Option<String>,
    /// The longest lifetime (`exp - iat`) accepted.
    pub max_lifetime: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            issuer: None,
            audience: None,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }
}

/// Checks tokens: HS256 against the secret, RS256 against an RSA public key, as configured,
/// and the [`TokenPolicy`].
#[derive(Clone)]
pub struct TokenVerifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    policy: TokenPolicy,
}

fn validation(alg: Algorithm, policy: &TokenPolicy) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    let mut required = vec!["exp"];
    match &policy.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Not configured: a token carrying an `aud` is not refused for it.
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &policy.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl TokenVerifier {
    /// HS256 tokens signed with `secret` (none if `secret` is empty), under the default policy.
    pub fn new(secret: &str) -> Self {
        TokenVerifier {
            hs256: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            rs256: None,
            policy: TokenPolicy::default(),
        }
    }

    /// Checks tokens against `policy` too.
    pub fn with_policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Also accepts RS256 tokens signed by the holder of the RSA public key `pem` (PKCS#1 or
    /// SPKI PEM).
    pub fn with_rs256_public_key(mut self, pem: &[u8]) -> Result<Self, InvalidRsaKey> {
        self.rs256 = Some(DecodingKey::from_rsa_pem(pem).map_err(InvalidRsaKey)?);
        Ok(self)
    }

    fn accepted(&self) -> &'static str {
        match (&self.hs256, &self.rs256) {
            (Some(_), Some(_)) => "HS256 and RS256",
            (None, Some(_)) => "only RS256",
            _ => "only HS256",
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::WrongAlgorithm(self.accepted())
            }
            _ => AuthError::Malformed(e.to_string()),
        })?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or(AuthError::WrongAlgorithm(self.accepted()))?;
        let validation = validation(header.alg, &self.policy);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidIssuer => AuthError::BadClaims(
                "the issuer (iss) is not the one this gateway accepts (gateway.jwt_issuer)".into(),
            ),
            ErrorKind::InvalidAudience => AuthError::BadClaims(
                "the audience (aud) does not name this gateway's (gateway.jwt_audience)".into(),
            ),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::WrongAlgorithm(self.accepted())
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::BadClaims(format!("missing claim {claim:?}"))
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::BadClaims(format!("claim {claim:?} has the wrong format"))
            }
            ErrorKind::Json(err) if err.is_data() => AuthError::BadClaims(err.to_string()),
            _ => AuthError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        let issued = claims.iat.map_or(now, |iat| iat.min(now));
        let lifetime_secs = claims.exp.saturating_sub(issued);
        let max_secs = self.policy.max_lifetime.as_secs();
        if lifetime_secs > max_secs {
            return Err(AuthError::LifetimeTooLong {
                lifetime_secs,
                max_secs,
            });
        }
        Ok(Principal {
            viewer: Viewer {
                tenant_id: claims.tenant_id,
                user_id: claims.sub,
                role: parse_role(&claims.role)?,
            },
            expires_at: claims.exp,
        })
    }
}

/// Mints an HS256 token for `user_id` of `tenant_id` with `role`, valid for `ttl` from now,
/// without `iss` or `aud`. Used by tests and benchmarks; `vigia token` uses
/// [`crate::Config::issue_token`], which follows the configured policy.
pub fn issue_token(
    secret: &str,
    user_id: u64,
    tenant_id: u64,
    role: Role,
    ttl: Duration,
) -> String {
    issue_token_with(secret, user_id, tenant_id, role, ttl, None, None)
}

/// [`issue_token`] with an `iss` and an `aud`.
pub(crate) fn issue_token_with(
    secret: &str,
    user_id: u64,
    tenant_id: u64,
    role: Role,
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = IssuedClaims {
        claims: Claims {
            sub: user_id,
            tenant_id,
            role: role_name(role).to_string(),
            exp: (now + ttl).as_secs(),
            iat: Some(now.as_secs()),
        },
        iss: issuer,
        aud: audience,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with an HMAC key cannot fail")
}

/// The token of the `Authorization: Bearer` header, if there is such a header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, AuthError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    Some(token.ok_or(AuthError::NotBearer))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret";

    fn sign<T: Serialize>(alg: Algorithm, claims: &T, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn an_issued_token_verifies_to_its_claims() {
        let token = issue_token(SECRET, 123, 42, Role::Seller, Duration::from_secs(60));
        let p = TokenVerifier::new(SECRET).verify(&token).unwrap();
        assert_eq!(
            p.viewer,
            Viewer {
                tenant_id: 42,
                user_id: 123,
                role: Role::Seller
            }
        );
        let now = jsonwebtoken::get_current_timestamp();
        assert!(p.expires_at >= now + 59 && p.expires_at <= now + 60);
    }

    #[test]
    fn sub_may_be_a_number_or_a_numeric_string() {
        let v = TokenVerifier::new(SECRET);
        for sub in [serde_json::json!(7), serde_json::json!("7")] {
            let claims =
                serde_json::json!({"sub": sub, "tenant_id": 1, "role": "ceo", "exp": in_an_hour()});
            let p = v.verify(&sign(Algorithm::HS256, &claims, SECRET)).unwrap();
            assert_eq!(p.viewer.user_id, 7);
            assert_eq!(p.viewer.role, Role::Ceo);
        }
        let claims =
            serde_json::json!({"sub": "seven", "tenant_id": 1, "role": "ceo", "exp": in_an_hour()});
        let err = v
            .verify(&sign(Algorithm::HS256, &claims, SECRET))
            .unwrap_err();
        assert!(
            matches!(&err, AuthError::BadClaims(m) if m.contains("numeric")),
            "{err}"
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = issue_token("other", 1, 1, Role::Ceo, Duration::from_secs(60));
        assert_eq!(
            TokenVerifier::new(SECRET).verify(&token),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = issue_token(SECRET, 1, 1, Role::Seller, Duration::from_secs(60));
        let other = issue_token(SECRET, 1, 1, Role::Ceo, Duration::from_secs(60));
        // Header and signature of one token, claims of another.
        let parts: Vec<&str> = token.split('.').collect();
        let other_claims = other.split('.').nth(1).unwrap();
        let forged = format!("{}.{}.{}", parts[0], other_claims, parts[2]);
        assert_eq!(
            TokenVerifier::new(SECRET).verify(&forged),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let claims = serde_json::json!({"sub": 1, "tenant_id": 1, "role": "seller",
            "exp": jsonwebtoken::get_current_timestamp() - 5});
        assert_eq!(
            TokenVerifier::new(SECRET).verify(&sign(Algorithm::HS256, &claims, SECRET)),
            Err(AuthError::Expired)
        );
        assert_eq!(AuthError::Expired.to_string(), "token expired");
    }

    #[test]
    fn other_algorithms_are_refused() {
        let claims =
            serde_json::json!({"sub": 1, "tenant_id": 1, "role": "ceo", "exp": in_an_hour()});
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(
                TokenVerifier::new(SECRET).verify(&sign(alg, &claims, SECRET)),
                Err(AuthError::WrongAlgorithm("only HS256")),
                "{alg:?}"
            );
        }
        // An unsigned token ("alg": "none") is not even a token we can parse.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let payload = issue_token(SECRET, 1, 1, Role::Ceo, Duration::from_secs(60));
        let payload = payload.split('.').nth(1).unwrap();
        let unsigned = format!("{header}.{payload}.");
        assert!(TokenVerifier::new(SECRET).verify(&unsigned).is_err());
    }

    #[test]
    fn missing_or_wrong_claims_are_named() {
        let v = TokenVerifier::new(SECRET);
        let no_exp = serde_json::json!({"sub": 1, "tenant_id": 1, "role": "ceo"});
        assert!(matches!(
            v.verify(&sign(Algorithm::HS256, &no_exp, SECRET)),
            Err(AuthError::BadClaims(m)) if m.contains("exp")
        ));
        let no_tenant = serde_json::json!({"sub": 1, "role": "ceo", "exp": in_an_hour()});
        assert!(matches!(
            v.verify(&sign(Algorithm::HS256, &no_tenant, SECRET)),
            Err(AuthError::BadClaims(m)) if m.contains("tenant_id")
        ));
        let bad_role =
            serde_json::json!({"sub": 1, "tenant_id": 1, "role": "admin", "exp": in_an_hour()});
        assert!(matches!(
            v.verify(&sign(Algorithm::HS256, &bad_role, SECRET)),
            Err(AuthError::BadClaims(m)) if m.contains("admin")
        ));
        assert!(matches!(
            v.verify("not-a-jwt"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn the_lifetime_counts_from_iat_or_now_whichever_is_earlier() {
        let hour = 3600;
        let now = jsonwebtoken::get_current_timestamp();
        let v = TokenVerifier::new(SECRET).with_policy(TokenPolicy {
            max_lifetime: Duration::from_secs(2 * hour),
            ..TokenPolicy::default()
        });
        let token = |iat: Option<u64>, exp: u64| {
            let mut c = serde_json::json!({"sub": 1, "tenant_id": 1, "role": "ceo", "exp": exp});
            if let Some(iat) = iat {
                c["iat"] = serde_json::json!(iat);
            }
            sign(Algorithm::HS256, &c, SECRET)
        };
        for ok in [
            token(Some(now), now + 2 * hour),
            token(None, now + 2 * hour - 5),
            token(Some(now - hour), now + hour),
        ] {
            assert!(v.verify(&ok).is_ok());
        }
        for (too_long, lifetime) in [
            (token(Some(now), now + 3 * hour), 3 * hour),
            (token(None, now + 3 * hour), 3 * hour),
            (token(Some(now - 2 * hour), now + hour), 3 * hour),
            // An `iat` in the future does not shorten the lifetime.
            (token(Some(now + 2 * hour), now + 3 * hour), 3 * hour),
        ] {
            assert_eq!(
                v.verify(&too_long),
                Err(AuthError::LifetimeTooLong {
                    lifetime_secs: lifetime,
                    max_secs: 2 * hour
                })
            );
        }
        assert!(AuthError::LifetimeTooLong {
            lifetime_secs: 1,
            max_secs: 0
        }
        .to_string()
        .contains("jwt_max_lifetime"));
    }

    #[test]
    fn issuer_and_audience_are_required_only_when_configured() {
        let claims = |extra: serde_json::Value| {
            let mut c =
                serde_json::json!({"sub": 1, "tenant_id": 1, "role": "ceo", "exp": in_an_hour()});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            sign(Algorithm::HS256, &c, SECRET)
        };
        let open = TokenVerifier::new(SECRET);
        assert!(open
            .verify(&claims(serde_json::json!({"iss": "x", "aud": "y"})))
            .is_ok());
        let strict = TokenVerifier::new(SECRET).with_policy(TokenPolicy {
            issuer: Some("idp".into()),
            audience: Some("api".into()),
            ..TokenPolicy::default()
        });
        assert!(strict
            .verify(&claims(
                serde_json::json!({"iss": "idp", "aud": ["x", "api"]})
            ))
            .is_ok());
        for (extra, named) in [
            (serde_json::json!({"aud": "api"}), "iss"),
            (serde_json::json!({"iss": "other", "aud": "api"}), "iss"),
            (serde_json::json!({"iss": "idp"}), "aud"),
            (serde_json::json!({"iss": "idp", "aud": "other"}), "aud"),
        ] {
            match strict.verify(&claims(extra.clone())) {
                Err(AuthError::BadClaims(m)) => assert!(m.contains(named), "{extra}: {m}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let minted = issue_token_with(
            SECRET,
            1,
            1,
            Role::Ceo,
            Duration::from_secs(60),
            Some("idp"),
            Some("api"),
        );
        assert!(strict.verify(&minted).is_ok());
    }

    #[test]
    fn the_bearer_header_is_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_none());
        headers.insert(header::AUTHORIZATION, "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(Ok("abc.def.ghi")));
        headers.insert(header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(Ok("xyz")));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(Err(AuthError::NotBearer)));
        headers.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(Err(AuthError::NotBearer)));
    }
}

//! HS256 access tokens with `sub`, `role`, `iat`, `exp`, `jti`, `iss`, `aud`.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{auth::AuthUser, domain::Role};

/// Tokens each thread remembers as verified (`JwtKeys::authenticate`).
const VERIFIED_PER_THREAD: usize = 4096;

thread_local! {
    /// Token → what it proved, per thread (each HTTP worker is one thread,
    /// so no lock). Only tokens that verified are kept.
    static VERIFIED: RefCell<HashMap<Box<str>, Verified>> = RefCell::new(HashMap::new());
}

/// Tells apart `JwtKeys` values (tests run several servers in one process).
static NEXT_KEYS_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy)]
struct Verified {
    keys: u64,
    user: AuthUser,
    exp: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// Signing and verification keys plus the validation rules. Only HS256 is
/// accepted: `alg: none` and every other algorithm are rejected.
pub struct JwtKeys {
    id: u64,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct InvalidToken(#[from] jsonwebtoken::errors::Error);

impl JwtKeys {
    pub fn new(secret: &SecretString, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub", "jti"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        Self {
            id: NEXT_KEYS_ID.fetch_add(1, Ordering::Relaxed),
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs()
    }

    pub fn issue(&self, user_id: i64, role: Role) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it to forge expired tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.jti.is_empty() {
            return Err(InvalidToken(jsonwebtoken::errors::ErrorKind::InvalidToken.into()));
        }
        Ok(data.claims)
    }

    /// The caller an access token proves, as `verify` decides, remembering
    /// per thread the tokens that verified. A token is a pure function of
    /// its claims and the key (nothing revokes an access token before its
    /// `exp`), so a remembered token only needs its expiry checked again,
    /// with the same leeway; any other string, a tampered copy included, is
    /// verified in full. Saves the HMAC and two JSON parses per request.
    pub fn authenticate(&self, token: &str) -> Result<AuthUser, InvalidToken> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.validation.leeway;
        let remembered = VERIFIED.with(|m| m.borrow().get(token).copied());
        if let Some(v) = remembered.filter(|v| v.keys == self.id && now <= v.exp.saturating_add(leeway)) {
            return Ok(v.user);
        }
        let claims = self.verify(token)?;
        let id = claims
            .sub
            .parse::<i64>()
            .map_err(|_| InvalidToken(jsonwebtoken::errors::ErrorKind::InvalidSubject.into()))?;
        let user = AuthUser {
            id,
            role: claims.role,
        };
        let verified = Verified {
            keys: self.id,
            user,
            exp: claims.exp,
        };
        VERIFIED.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= VERIFIED_PER_THREAD {
                m.retain(|_, v| now <= v.exp.saturating_add(leeway));
                if m.len() >= VERIFIED_PER_THREAD / 2 {
                    m.clear();
                }
            }
            m.insert(token.into(), verified);
        });
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&SecretString::from(secret), "iss", "aud", Duration::from_secs(60))
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// Claims for `keys(…)`'s issuer and audience.
    fn claims(sub: &str, iat: u64, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            role: Role::User,
            iat,
            exp,
            jti: "x".into(),
            iss: "iss".into(),
            aud: "aud".into(),
        }
    }

    #[test]
    fn round_trip() {
        let k = keys(SECRET);
        let t = k.issue(42, Role::Admin).expect("sign");
        let c = k.verify(&t).expect("valid");
        assert_eq!(c.sub, "42");
        assert_eq!(c.role, Role::Admin);
        assert_eq!(c.exp - c.iat, 60);
    }

    #[test]
    fn rejects_alg_none_wrong_key_tamper_expiry_and_wrong_audience() {
        let k = keys(SECRET);
        let t = k.issue(1, Role::User).expect("sign");
        let parts: Vec<&str> = t.split('.').collect();

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(k.verify(&format!("{none_header}.{}.", parts[1])).is_err());

        assert!(keys("another-secret-another-secret-xx").verify(&t).is_err());

        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        payload["role"] = "super_admin".into();
        let forged = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(k.verify(&format!("{}.{forged}.{}", parts[0], parts[2])).is_err());

        let now = jsonwebtoken::get_current_timestamp();
        let expired = claims("1", now - 120, now - 60);
        assert!(k.verify(&k.sign(&expired).expect("sign")).is_err());

        let wrong_aud = Claims {
            exp: now + 60,
            aud: "other".into(),
            ..expired.clone()
        };
        assert!(k.verify(&k.sign(&wrong_aud).expect("sign")).is_err());
        let wrong_iss = Claims {
            exp: now + 60,
            iss: "other".into(),
            ..expired
        };
        assert!(k.verify(&k.sign(&wrong_iss).expect("sign")).is_err());
    }

    #[test]
    fn authenticate_remembers_only_what_verified_under_the_same_keys() {
        let k = keys(SECRET);
        let t = k.issue(7, Role::Admin).expect("sign");
        let user = k.authenticate(&t).expect("valid");
        assert_eq!((user.id, user.role), (7, Role::Admin));
        // Remembered now; still the same answer.
        assert_eq!(k.authenticate(&t).expect("remembered").id, 7);
        // The same string under other keys (another server in this process)
        // is verified again, and fails there.
        assert!(keys("another-secret-another-secret-xx").authenticate(&t).is_err());
        // A tampered signature is another string: verified, and rejected.
        let mut tampered = t.clone();
        let last = tampered.pop().expect("nonempty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(k.authenticate(&tampered).is_err());
        // A subject that is not a user id is not a caller.
        let now = jsonwebtoken::get_current_timestamp();
        let odd = claims("someone", now, now + 60);
        assert!(k.authenticate(&k.sign(&odd).expect("sign")).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let k = keys(SECRET);
        // Valid for the current second only: exp is exactly the leeway ago.
        let mut now = jsonwebtoken::get_current_timestamp();
        let mut late = claims("3", now - 60, now - 5);
        let mut t = k.sign(&late).expect("sign");
        // Again if the second turned between reading the clock and verifying.
        let mut accepted = false;
        for _ in 0..3 {
            accepted = k.authenticate(&t).is_ok();
            if accepted {
                break;
            }
            now = jsonwebtoken::get_current_timestamp();
            late.exp = now - 5;
            t = k.sign(&late).expect("sign");
        }
        assert!(accepted, "valid within the leeway");
        while jsonwebtoken::get_current_timestamp() == now {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(k.authenticate(&t).is_err(), "expired, though remembered");
    }

    #[test]
    fn rejects_other_hmac_algorithms() {
        let k = keys(SECRET);
        let now = jsonwebtoken::get_current_timestamp();
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims("1", now, now + 60),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign");
        assert!(k.verify(&hs512).is_err());
    }
}

//! HS256 access tokens with `sub`, `role`, `iat`, `exp`, `jti`, `iss`, `aud`.

use std::time::Duration;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::{auth::AuthUser, domain::Role};

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

    /// The caller an access token proves.
    pub fn authenticate(&self, token: &str) -> Result<AuthUser, InvalidToken> {
        let claims = self.verify(token)?;
        let id = claims
            .sub
            .parse::<i64>()
            .map_err(|_| InvalidToken(jsonwebtoken::errors::ErrorKind::InvalidSubject.into()))?;
        Ok(AuthUser {
            id,
            role: claims.role,
        })
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
    fn authenticate_names_the_caller_and_refuses_anything_else() {
        let k = keys(SECRET);
        let t = k.issue(7, Role::Admin).expect("sign");
        let user = k.authenticate(&t).expect("valid");
        assert_eq!((user.id, user.role), (7, Role::Admin));
        assert!(keys("another-secret-another-secret-xx").authenticate(&t).is_err());
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

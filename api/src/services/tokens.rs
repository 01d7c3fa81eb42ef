//! Access tokens (EdDSA JWT) and short-lived MFA tokens. Decoding pins the algorithm,
//! checks `iss`, `aud`, `exp`, `nbf` (when present) and `iat` (not in the future) with
//! a small leeway, requires every claim, looks the `kid` up only among configured keys
//! and never follows `jku`, `x5u` or `jwk`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::config::AuthConfig;
use shared::domain::Role;
use uuid::Uuid;

/// Leeway for clock skew between api replicas, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Longest token worth parsing; anything longer is refused unread.
const MAX_TOKEN_BYTES: usize = 4096;
/// How long a password-verified login may take to present its TOTP code.
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub role: Role,
    /// The session (refresh-token family) this token belongs to.
    pub sid: Uuid,
    /// Whether the login that made this session passed 2FA.
    pub mfa: bool,
    pub iat: u64,
    pub exp: u64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// The claims of an MFA token: proof that the password was right, good only for
/// `POST /auth/login/mfa`, for a few minutes, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaClaims {
    pub sub: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// Claims that say when they were issued.
trait IssuedAt {
    fn iat(&self) -> u64;
}

impl IssuedAt for AccessClaims {
    fn iat(&self) -> u64 {
        self.iat
    }
}

impl IssuedAt for MfaClaims {
    fn iat(&self) -> u64 {
        self.iat
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    public_x: String,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    /// Access tokens this process verified, by their text, until they expire: an
    /// Ed25519 verification was about a tenth of a submission's CPU in the api.
    verified: std::sync::Mutex<HashMap<Box<str>, AccessClaims>>,
}

/// Verified access tokens kept at most; when full, expired ones go, then (if none) all.
const VERIFIED_CAPACITY: usize = 100_000;

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let signing = SigningKey::from_bytes(config.jwt_signing_key.expose_secret());
        let der = signing
            .to_pkcs8_der()
            .map_err(|err| anyhow::anyhow!("cannot encode the JWT signing key: {err}"))?;
        let public = signing.verifying_key().to_bytes();
        Ok(TokenKeys {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            kid: config.jwt_key_id.clone(),
            public_x: URL_SAFE_NO_PAD.encode(public),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            access_ttl: config.access_token_ttl,
            verified: std::sync::Mutex::default(),
        })
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header
    }

    fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        jsonwebtoken::encode(&self.header(), claims, &self.encoding)
            .map_err(|err| anyhow::anyhow!("cannot sign a token: {err}"))
    }

    pub fn issue_access(
        &self,
        user: Uuid,
        role: Role,
        session: Uuid,
        mfa: bool,
    ) -> anyhow::Result<String> {
        let iat = now_secs();
        self.sign(&AccessClaims {
            sub: user,
            role,
            sid: session,
            mfa,
            iat,
            exp: iat + self.access_ttl.as_secs(),
            jti: Uuid::now_v7(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        })
    }

    fn mfa_audience(&self) -> String {
        format!("{}#mfa", self.audience)
    }

    pub fn issue_mfa(&self, user: Uuid) -> anyhow::Result<String> {
        let iat = now_secs();
        self.sign(&MfaClaims {
            sub: user,
            iat,
            exp: iat + MFA_TOKEN_TTL.as_secs(),
            jti: Uuid::now_v7(),
            iss: self.issuer.clone(),
            aud: self.mfa_audience(),
        })
    }

    fn validation(&self, audience: &str) -> Validation {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud", "jti"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation
    }

    fn decode<T: serde::de::DeserializeOwned + IssuedAt>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<T, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        // Only our own kid; `jku`/`x5u`/`jwk` in the header are never looked at.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        let claims = jsonwebtoken::decode::<T>(token, &self.decoding, &self.validation(audience))
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        // jsonwebtoken does not look at `iat`: a token issued in the future (a skewed
        // or forged clock) would otherwise live past its intended lifetime.
        if claims.iat() > now_secs().saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Verifies an access token: signature, `kid`, issuer, audience, times. A token
    /// this process already verified is looked up instead, while it is unexpired
    /// (within the same leeway); only the exact text of a token that passed matches.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let now = now_secs();
        if let Ok(verified) = self.verified.lock()
            && let Some(claims) = verified.get(token)
        {
            return if claims.exp.saturating_add(LEEWAY_SECS) > now {
                Ok(claims.clone())
            } else {
                Err(TokenError::Expired)
            };
        }
        let claims: AccessClaims = self.decode(token, &self.audience)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.retain(|_, c| c.exp.saturating_add(LEEWAY_SECS) > now);
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
            }
            verified.insert(token.into(), claims.clone());
        }
        Ok(claims)
    }

    pub fn verify_mfa(&self, token: &str) -> Result<MfaClaims, TokenError> {
        self.decode(token, &self.mfa_audience())
    }

    /// The public key set (RFC 7517) verifiers can fetch.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": self.public_x,
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        let config = AuthConfig::from_lookup(|key| (key == "APP_ENV").then(|| "test".to_owned()))
            .expect("test auth config");
        TokenKeys::from_config(&config).expect("keys")
    }

    /// Access claims issued `iat_offset` seconds from now, plus `extra` claims, signed
    /// with the real key.
    fn access_token(keys: &TokenKeys, iat_offset: i64, extra: serde_json::Value) -> String {
        let iat = now_secs().saturating_add_signed(iat_offset);
        let mut claims = serde_json::to_value(AccessClaims {
            sub: Uuid::now_v7(),
            role: Role::User,
            sid: Uuid::now_v7(),
            mfa: false,
            iat,
            exp: iat + 600,
            jti: Uuid::now_v7(),
            iss: keys.issuer.clone(),
            aud: keys.audience.clone(),
        })
        .expect("claims");
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        keys.sign(&claims).expect("signed")
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires_and_only_by_its_exact_text() {
        let keys = keys();
        let token = access_token(&keys, 0, serde_json::json!({}));
        let first = keys.verify_access(&token).expect("valid");
        assert_eq!(keys.verify_access(&token).expect("cached").jti, first.jti);
        // One character changed in the signature: verified afresh, and refused.
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert!(matches!(
            keys.verify_access(&tampered),
            Err(TokenError::Invalid)
        ));
        // Past its expiry (and the leeway) the remembered token is refused.
        if let Ok(mut verified) = keys.verified.lock()
            && let Some(claims) = verified.get_mut(token.as_str())
        {
            claims.exp = now_secs() - LEEWAY_SECS - 1;
        }
        assert!(matches!(
            keys.verify_access(&token),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn a_fresh_token_verifies() {
        let keys = keys();
        assert!(
            keys.verify_access(&access_token(&keys, 0, serde_json::json!({})))
                .is_ok()
        );
        let issued = keys.issue_access(Uuid::now_v7(), Role::User, Uuid::now_v7(), false);
        assert!(keys.verify_access(&issued.expect("issued")).is_ok());
    }

    #[test]
    fn a_token_not_yet_valid_is_refused_beyond_the_leeway() {
        let keys = keys();
        let now = now_secs();
        let future = serde_json::json!({ "nbf": now + 3600 });
        assert_eq!(
            keys.verify_access(&access_token(&keys, 0, future)),
            Err(TokenError::Invalid)
        );
        let within_leeway = serde_json::json!({ "nbf": now + LEEWAY_SECS / 2 });
        assert!(
            keys.verify_access(&access_token(&keys, 0, within_leeway))
                .is_ok()
        );
        let past = serde_json::json!({ "nbf": now - 60 });
        assert!(keys.verify_access(&access_token(&keys, 0, past)).is_ok());
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused_beyond_the_leeway() {
        let keys = keys();
        assert_eq!(
            keys.verify_access(&access_token(&keys, 3600, serde_json::json!({}))),
            Err(TokenError::Invalid)
        );
        let skewed = access_token(&keys, (LEEWAY_SECS / 2) as i64, serde_json::json!({}));
        assert!(keys.verify_access(&skewed).is_ok());
    }

    #[test]
    fn an_mfa_token_issued_in_the_future_is_refused() {
        let keys = keys();
        let iat = now_secs() + 3600;
        let token = keys
            .sign(&MfaClaims {
                sub: Uuid::now_v7(),
                iat,
                exp: iat + 300,
                jti: Uuid::now_v7(),
                iss: keys.issuer.clone(),
                aud: keys.mfa_audience(),
            })
            .expect("signed");
        assert_eq!(keys.verify_mfa(&token).err(), Some(TokenError::Invalid));
        let fresh = keys.issue_mfa(Uuid::now_v7()).expect("issued");
        assert!(keys.verify_mfa(&fresh).is_ok());
    }
}

//! Authentication and authorization extractors.
//!
//! [`AuthUser`] verifies the bearer token and then asks PostgreSQL whether its session
//! is still active and what the user's role is now (through the process's session
//! cache, valid only under the user's current session epoch): logout, a password
//! change, reuse of a refresh token or a role change end the token's validity at once
//! (the bound is zero, not the token's 15-minute lifetime). [`Authorized<P>`] adds a permission
//! check from the role table; admin-only permissions also need a 2FA login.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use shared::domain::{Permission, Principal};

use crate::error::ApiError;
use crate::services::auth;
use crate::services::session_cache::SessionEpoch;
use crate::services::tokens::{AccessClaims, TokenError};
use crate::state::AppState;

/// The caller, authenticated from its bearer token: the extractor that makes the
/// [`Principal`] services take (its address confirmation is read with the session, so
/// a confirmation counts at once). Dereferences to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser(pub Principal);

impl std::ops::Deref for AuthUser {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

/// Access-token claims whose signature and lifetime were already checked earlier in
/// this request (by the rate limiter), so the extractor does not check them again.
#[derive(Debug, Clone)]
pub struct VerifiedAccess(pub AccessClaims);

impl AuthUser {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        Ok(self.0.check(permission)?)
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthenticated("an Authorization: Bearer token is required".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not valid".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthenticated(
            "the Authorization scheme must be Bearer".into(),
        ));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(*user);
        }
        // The rate limiter verified the token and read the user's session epoch.
        let mut epoch = None;
        let claims = match parts.extensions.remove::<VerifiedAccess>() {
            Some(VerifiedAccess(claims)) => {
                epoch = parts.extensions.get::<SessionEpoch>().copied();
                claims
            }
            None => {
                let token = bearer(parts)?;
                state
                    .security
                    .tokens
                    .verify_access(token)
                    .map_err(|err| match err {
                        TokenError::Expired => ApiError::TokenExpired,
                        TokenError::Invalid => {
                            ApiError::Unauthenticated("the access token is not valid".into())
                        }
                    })?
            }
        };
        let current = match epoch {
            Some(epoch) => auth::current_role_cached(state, claims.sid, claims.sub, epoch).await?,
            None => auth::current_role(state, claims.sid, claims.sub).await?,
        };
        let (role, email_verified) = match current {
            Some((role, verified)) if role == claims.role => (role, verified),
            Some(_) => {
                return Err(ApiError::Unauthenticated(
                    "the account's role changed; refresh the token".into(),
                ));
            }
            None => {
                return Err(ApiError::Unauthenticated(
                    "the session has ended; sign in again".into(),
                ));
            }
        };
        let user = AuthUser(Principal {
            id: claims.sub,
            role,
            session_id: claims.sid,
            mfa: claims.mfa,
            email_verified,
        });
        parts.extensions.insert(user);
        Ok(user)
    }
}

/// A permission an endpoint requires, as a type.
pub trait RequiredPermission: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! permissions {
    ($($name:ident),* $(,)?) => {
        /// Marker types for [`Authorized`].
        pub mod perm {
            $(
                #[derive(Debug)]
                pub struct $name;
                impl super::RequiredPermission for $name {
                    const PERMISSION: shared::domain::Permission = shared::domain::Permission::$name;
                }
            )*
        }
    };
}

permissions!(
    SubmitEmail,
    SubmitCampaign,
    Upload,
    Scan,
    ReadOwnRequests,
    ReadAllRequests,
    ManageQueues,
    ManageUsers,
    ManageSuppressions,
);

/// The caller, authenticated and holding permission `P`.
#[derive(Debug)]
pub struct Authorized<P: RequiredPermission>(pub AuthUser, pub PhantomData<P>);

impl<P: RequiredPermission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require(P::PERMISSION)?;
        Ok(Authorized(user, PhantomData))
    }
}

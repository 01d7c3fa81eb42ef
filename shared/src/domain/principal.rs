//! Who is acting: the account behind a request (its role, whether its login passed a
//! second factor, whether its address is confirmed). Services take a [`Principal`],
//! never the HTTP extractor that produced it, and check permissions against it; the
//! api decides what HTTP status a [`Refusal`] is.

use uuid::Uuid;

use super::{Permission, Role};

/// An authenticated account, as services see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub id: Uuid,
    pub role: Role,
    /// The session its token belongs to.
    pub session_id: Uuid,
    /// The login behind this session passed a second factor.
    pub mfa: bool,
    /// The account's email address is confirmed.
    pub email_verified: bool,
}

/// Why a principal may not do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {} role may not do this", .0.as_str())]
    Role(Role),
    #[error("this needs a login that passed the second factor")]
    SecondFactor,
    #[error("this needs a confirmed email address")]
    UnconfirmedEmail,
}

impl Principal {
    /// Whether it may do what `permission` allows: its role has it, and the second
    /// factor or a confirmed address when the permission asks for them.
    pub fn check(&self, permission: Permission) -> Result<(), Refusal> {
        if !self.role.can(permission) {
            return Err(Refusal::Role(self.role));
        }
        if permission.requires_mfa() && !self.mfa {
            return Err(Refusal::SecondFactor);
        }
        if permission.requires_verified_email() && !self.email_verified {
            return Err(Refusal::UnconfirmedEmail);
        }
        Ok(())
    }
}

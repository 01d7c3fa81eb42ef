//! Roles and permissions: the one table that says who may do what.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Promoter,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    SubmitEmail,
    SubmitCampaign,
    Upload,
    Scan,
    ReadOwnRequests,
    ReadAllRequests,
    ManageQueues,
    ManageUsers,
    /// The account's own suppression list (addresses it no longer sends to).
    ManageSuppressions,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::SubmitEmail,
        Permission::SubmitCampaign,
        Permission::Upload,
        Permission::Scan,
        Permission::ReadOwnRequests,
        Permission::ReadAllRequests,
        Permission::ManageQueues,
        Permission::ManageUsers,
        Permission::ManageSuppressions,
    ];

    /// Admin-only permissions also require a login that passed 2FA.
    pub fn requires_mfa(self) -> bool {
        !Role::Promoter.can(self) && !Role::User.can(self)
    }

    /// Sending mail or storing files on the service's behalf needs a confirmed email
    /// address: an unverified account cannot be used to relay mail.
    pub fn requires_verified_email(self) -> bool {
        matches!(
            self,
            Permission::SubmitEmail | Permission::SubmitCampaign | Permission::Upload
        )
    }
}

const USER: &[Permission] = &[
    Permission::SubmitEmail,
    Permission::Upload,
    Permission::Scan,
    Permission::ReadOwnRequests,
];

const PROMOTER: &[Permission] = &[
    Permission::SubmitEmail,
    Permission::SubmitCampaign,
    Permission::Upload,
    Permission::Scan,
    Permission::ReadOwnRequests,
    Permission::ManageSuppressions,
];

const ADMIN: &[Permission] = &Permission::ALL;

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Promoter, Role::User];

    /// The permission table.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Role::Admin => ADMIN,
            Role::Promoter => PROMOTER,
            Role::User => USER,
        }
    }

    pub fn can(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Promoter => "promoter",
            Role::User => "user",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "promoter" => Ok(Role::Promoter),
            "user" => Ok(Role::User),
            other => Err(format!("unknown role `{other}`")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_only_permissions_require_mfa() {
        let admin_only: Vec<Permission> = Permission::ALL
            .into_iter()
            .filter(|p| p.requires_mfa())
            .collect();
        assert_eq!(
            admin_only,
            vec![
                Permission::ReadAllRequests,
                Permission::ManageQueues,
                Permission::ManageUsers
            ]
        );
    }

    #[test]
    fn roles_round_trip_through_strings() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}

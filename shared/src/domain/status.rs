//! The states of a job and of a request, and the kinds of request. Stored as text;
//! every transition is one named function in `db::jobs` or `db::requests`.

/// A text enum: `as_str`, `FromStr`, `Display`, serde and sqlx (as PostgreSQL text).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Every value, comma-separated (for error messages and docs).
            pub fn list() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("`{other}` is not one of {}", Self::list())),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// A job's life: `[waiting →] queued → running → succeeded | retrying → … | dead`;
    /// `cancelled` before it starts; `suppressed` when every recipient of a message
    /// is on the sender's suppression list (nothing was sent). `succeeded`, `dead`,
    /// `cancelled` and `suppressed` are final.
    JobStatus {
        /// Enqueued after jobs that had not ended (`NewJob::after`): neither claimable
        /// nor final, never pushed to Redis; `queued` once every job it waits for (and
        /// every follow-up those spawned) has ended, whichever way.
        Waiting => "waiting",
        Queued => "queued",
        Running => "running",
        Retrying => "retrying",
        Succeeded => "succeeded",
        Dead => "dead",
        Cancelled => "cancelled",
        Suppressed => "suppressed",
    }
);

impl JobStatus {
    /// The states a worker may claim a job from (besides a stale `running`); never
    /// `waiting`.
    pub const CLAIMABLE: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Retrying];
    /// The states a job ends in (only an operator's retry takes it out again): the
    /// jobs waiting for it are released when it reaches one.
    pub const FINAL: [JobStatus; 4] = [
        JobStatus::Succeeded,
        JobStatus::Dead,
        JobStatus::Cancelled,
        JobStatus::Suppressed,
    ];
}

text_enum!(
    /// A request's life: `queued → running → succeeded | failed | partially_failed |
    /// cancelled | suppressed`, decided by its jobs' counts. Suppressed messages are
    /// neither sent nor failures: a request whose other jobs all succeeded succeeded;
    /// `suppressed` only when every job was.
    RequestStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        PartiallyFailed => "partially_failed",
        Cancelled => "cancelled",
        Suppressed => "suppressed",
    }
);

text_enum!(
    /// What a client (or an operator) submitted.
    RequestKind {
        Email => "email",
        Campaign => "campaign",
        Upload => "upload",
        Scan => "scan",
        /// A no-op through the whole pipeline, proving it works end to end.
        Canary => "canary",
        /// A message about the account itself (an email verification link, a notice
        /// that someone tried to register the address), sent by Conveyor.
        AccountEmail => "account_email",
    }
);

text_enum!(
    /// Where an upload stands: served only while `clean`.
    UploadStatus {
        /// Received; not yet verified and scanned (also while the scanner is down).
        PendingScan => "pending_scan",
        Clean => "clean",
        /// A rule matched: quarantined, never served.
        Infected => "infected",
        /// The staged object failed verification (size, checksum or type).
        Rejected => "rejected",
    }
);

text_enum!(
    /// Where an upload's object is kept: the area of its storage key.
    UploadLocation {
        Staging => "staging",
        Stored => "stored",
        Quarantine => "quarantine",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(*status));
            assert_eq!(
                serde_json::to_value(status).expect("json"),
                serde_json::json!(status.as_str())
            );
        }
        for status in RequestStatus::ALL {
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(*status));
        }
        for kind in RequestKind::ALL {
            assert_eq!(kind.to_string().parse::<RequestKind>(), Ok(*kind));
        }
        assert!(!JobStatus::CLAIMABLE.contains(&JobStatus::Waiting));
        assert!(!JobStatus::FINAL.contains(&JobStatus::Waiting));
        let err = "lost".parse::<JobStatus>().expect_err("unknown");
        assert!(err.contains("queued, running"), "{err}");
    }
}

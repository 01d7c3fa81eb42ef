//! Domain types that carry their rules: once a value exists, it is valid.

pub mod email;
pub mod message;
pub mod password;
pub mod phone;
pub mod principal;
pub mod role;
pub mod status;

pub use email::EmailAddress;
pub use phone::PhoneNumber;
pub use principal::{Principal, Refusal};
pub use role::{Permission, Role};
pub use status::{JobStatus, RequestKind, RequestStatus, UploadLocation, UploadStatus};

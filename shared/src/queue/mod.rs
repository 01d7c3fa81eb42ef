//! Queues: their names, and the reliable Redis transport that carries job ids from
//! the api to the workers. PostgreSQL holds the jobs; Redis holds only their ids.

pub mod transport;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use transport::{Consumer, Queue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    Emails,
    Uploads,
    Scans,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Emails, QueueName::Uploads, QueueName::Scans];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Emails => "emails",
            QueueName::Uploads => "uploads",
            QueueName::Scans => "scans",
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown queue `{s}`"))
    }
}

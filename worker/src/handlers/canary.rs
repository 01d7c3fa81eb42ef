//! The `canary` queue: does nothing, successfully. A canary job travels the whole
//! pipeline — outbox, dispatch, claim, execution, completion, events, metrics — so
//! operators and benchmarks can prove the system end to end.

use shared::db::jobs::ClaimedJob;

use crate::handler::{Handler, Outcome};

#[derive(Debug, Clone, Copy, Default)]
pub struct Canary;

impl Handler for Canary {
    async fn handle(&self, _job: &ClaimedJob) -> Outcome {
        Outcome::Succeeded
    }
}

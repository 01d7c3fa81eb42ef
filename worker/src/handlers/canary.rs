//! The `canary` queue: does nothing, successfully. A canary job travels the whole
//! pipeline — outbox, dispatch, claim, execution, completion, events, metrics — so
//! operators and benchmarks can prove the system end to end.

use shared::db::jobs::ClaimedJob;
use shared::jobs::CanaryJob;

use crate::handler::{Handler, Outcome};

#[derive(Debug, Clone, Copy, Default)]
pub struct Canary;

impl Handler for Canary {
    type Job = CanaryJob;

    async fn handle(&self, _job: &ClaimedJob, _payload: CanaryJob) -> Outcome {
        Outcome::Succeeded
    }
}

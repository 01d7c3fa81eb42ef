//! The ids of the jobs this process holds (claimed, not yet recorded): what the
//! heartbeat keeps alive and what shutdown hands back.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

#[derive(Clone, Debug, Default)]
pub struct Running(Arc<Mutex<HashSet<Uuid>>>);

impl Running {
    pub fn insert(&self, id: Uuid) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(id);
        }
    }

    pub fn remove(&self, id: &Uuid) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(id);
        }
    }

    pub fn snapshot(&self) -> Vec<Uuid> {
        self.0
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }
}

//! Per-team budgets the broker enforces so no member can crowd out the
//! others (SPEC §15): open subscriptions per team, and the publish rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::Quota;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::config::Limits;
use crate::error::Error;

/// Open subscriptions per team, bounded.
pub struct StreamSlots {
    per_team: usize,
    teams: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl StreamSlots {
    pub fn new(per_team: usize) -> Self {
        StreamSlots {
            per_team,
            teams: Mutex::new(HashMap::new()),
        }
    }

    pub fn acquire(&self, team: &str) -> Result<OwnedSemaphorePermit, Error> {
        let sem = self
            .teams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(team.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_team)))
            .clone();
        sem.try_acquire_owned().map_err(|_| Error::TooManyStreams {
            team: team.to_owned(),
            limit: self.per_team,
        })
    }
}

/// The per-team publish rate of the configured limits.
pub fn rate_quota(l: &Limits) -> Quota {
    let per_second = NonZeroU32::new(l.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(l.rate_burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

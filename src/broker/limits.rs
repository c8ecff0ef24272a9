//! Per-team budgets the broker enforces so no member can crowd out the
//! others (SPEC §15): open subscriptions per team and in all, new messages
//! and envelope bytes per second, retries per second, an optional quota of
//! bytes per day, and the free-disk watermark below which nothing new is
//! accepted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::config::Limits;
use crate::broker::metrics::{self, Budget};
use crate::error::Error;
use crate::log::storage::Storage;

/// Open subscriptions per team and in all, bounded; and where each open
/// subscription has read up to (for the lag metric).
pub struct StreamSlots {
    per_team: usize,
    total: Arc<Semaphore>,
    total_limit: usize,
    teams: Mutex<HashMap<String, TeamStreams>>,
}

/// One team's subscription slots and its open subscriptions' positions.
struct TeamStreams {
    slots: Arc<Semaphore>,
    cursors: Vec<Weak<AtomicU64>>,
}

/// A subscription's slots, released on drop, and its position.
pub struct StreamSlot {
    _team: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
    cursor: Arc<AtomicU64>,
}

impl StreamSlot {
    /// The subscription has read the log up to `seq`.
    pub fn read_up_to(&self, seq: u64) {
        self.cursor.store(seq, Ordering::Relaxed);
    }
}

/// A team's open subscriptions: how many, and the lowest position among
/// them (`None` with none open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamStreamCount {
    pub team: String,
    pub open: usize,
    pub lowest: Option<u64>,
}

impl StreamSlots {
    pub fn new(per_team: usize, total: usize) -> Self {
        StreamSlots {
            per_team,
            total: Arc::new(Semaphore::new(total)),
            total_limit: total,
            teams: Mutex::new(HashMap::new()),
        }
    }

    pub fn acquire(&self, team: &str) -> Result<StreamSlot, Error> {
        let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        let t = teams.entry(team.to_owned()).or_insert_with(|| TeamStreams {
            slots: Arc::new(Semaphore::new(self.per_team)),
            cursors: Vec::new(),
        });
        let team_slot = t
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyStreams {
                team: team.to_owned(),
                limit: self.per_team,
            })?;
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            Error::Limit(format!(
                "the broker holds its limit of {} open subscriptions (limits.max_subscriptions); \
                 retry later",
                self.total_limit
            ))
        })?;
        let cursor = Arc::new(AtomicU64::new(0));
        t.cursors.retain(|c| c.strong_count() > 0);
        t.cursors.push(Arc::downgrade(&cursor));
        Ok(StreamSlot {
            _team: team_slot,
            _total: total,
            cursor,
        })
    }

    /// Open subscriptions in all.
    pub fn open(&self) -> usize {
        self.total_limit - self.total.available_permits()
    }

    /// Every team that has had a subscription: how many are open and the
    /// lowest position among them.
    pub fn per_team(&self) -> Vec<TeamStreamCount> {
        let teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        teams
            .iter()
            .map(|(team, t)| TeamStreamCount {
                team: team.clone(),
                open: self.per_team - t.slots.available_permits(),
                lowest: t
                    .cursors
                    .iter()
                    .filter_map(|c| c.upgrade())
                    .map(|c| c.load(Ordering::Relaxed))
                    .min(),
            })
            .collect()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// What a team may publish: new messages and their bytes per second,
/// retries per second, and bytes per UTC day.
pub struct PublishBudgets {
    limits: Limits,
    messages: DefaultKeyedRateLimiter<String>,
    bytes: DefaultKeyedRateLimiter<String>,
    retries: DefaultKeyedRateLimiter<String>,
    /// Team → (UTC day number, bytes accepted that day). In memory: a
    /// restart forgets the day's count.
    daily: Mutex<HashMap<String, (i64, u64)>>,
}

impl PublishBudgets {
    pub fn new(l: &Limits) -> Self {
        PublishBudgets {
            limits: l.clone(),
            messages: RateLimiter::keyed(quota(l.rate_per_second, l.rate_burst)),
            bytes: RateLimiter::keyed(quota(l.rate_bytes_per_second, l.rate_bytes_burst)),
            retries: RateLimiter::keyed(quota(l.retry_rate_per_second, l.retry_burst)),
            daily: Mutex::new(HashMap::new()),
        }
    }

    /// Spends a new message of `size` envelope bytes from `team`'s budgets.
    pub fn new_message(&self, team: &str, size: usize) -> Result<(), Error> {
        let l = &self.limits;
        let key = team.to_owned();
        if self.messages.check_key(&key).is_err() {
            metrics::rate_limited(team, Budget::Messages);
            return Err(Error::RateLimited {
                team: key,
                per_second: l.rate_per_second,
                burst: l.rate_burst,
            });
        }
        self.spend_bytes(team, size)?;
        if l.team_bytes_per_day > 0 {
            let day = time::OffsetDateTime::now_utc()
                .unix_timestamp()
                .div_euclid(86_400);
            let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
            let entry = daily.entry(key).or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            if entry.1 + size as u64 > l.team_bytes_per_day {
                metrics::rate_limited(team, Budget::DayQuota);
                return Err(Error::Limit(format!(
                    "team {team} has used its quota of {} envelope bytes for today (UTC; \
                     limits.team_bytes_per_day)",
                    l.team_bytes_per_day
                )));
            }
            entry.1 += size as u64;
        }
        Ok(())
    }

    /// Spends a retry (a publish of an id already logged) of `size` bytes
    /// from `team`'s retry budget and its byte budget (a retry is read and
    /// hashed like a new message).
    pub fn retry(&self, team: &str, size: usize) -> Result<(), Error> {
        let l = &self.limits;
        let key = team.to_owned();
        if self.retries.check_key(&key).is_err() {
            metrics::rate_limited(team, Budget::Retries);
            return Err(Error::Limit(format!(
                "retry rate limit exceeded for team {team}: at most {} re-publishes of logged \
                 messages per second (burst {}); retry later",
                l.retry_rate_per_second, l.retry_burst
            )));
        }
        self.spend_bytes(team, size)
    }

    /// Spends a durable cursor move from `team`'s message budget (it costs
    /// a write like a message).
    pub fn cursor_move(&self, team: &str) -> Result<(), Error> {
        let l = &self.limits;
        if self.messages.check_key(&team.to_owned()).is_err() {
            metrics::rate_limited(team, Budget::Messages);
            return Err(Error::RateLimited {
                team: team.to_owned(),
                per_second: l.rate_per_second,
                burst: l.rate_burst,
            });
        }
        Ok(())
    }

    fn spend_bytes(&self, team: &str, size: usize) -> Result<(), Error> {
        let l = &self.limits;
        let n = NonZeroU32::new(u32::try_from(size).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        if !matches!(self.bytes.check_key_n(&team.to_owned(), n), Ok(Ok(()))) {
            metrics::rate_limited(team, Budget::Bytes);
            return Err(Error::Limit(format!(
                "byte rate limit exceeded for team {team}: at most {} envelope bytes per second \
                 (burst {}); retry later",
                l.rate_bytes_per_second, l.rate_bytes_burst
            )));
        }
        Ok(())
    }
}

/// Storage scans (case listings and histories) a team may run at once on
/// the blocking pool.
pub const SCANS_PER_TEAM: usize = 4;

/// Storage scans in progress per team, bounded: a team's further scans
/// wait their turn (within the call deadline), other teams' do not.
#[derive(Default)]
pub struct ScanSlots {
    teams: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ScanSlots {
    pub async fn acquire(&self, team: &str) -> Result<OwnedSemaphorePermit, Error> {
        let sem = self
            .teams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(team.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(SCANS_PER_TEAM)))
            .clone();
        sem.acquire_owned()
            .await
            .map_err(|_| Error::Internal("scan slots closed".into()))
    }
}

/// How long a free-space reading is trusted.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(200);

/// The free-disk watermark: below `min_free` free bytes on the data
/// directory's device, nothing new is accepted.
pub struct DiskWatch {
    min_free: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskWatch {
    pub fn new(min_free: u64) -> Self {
        DiskWatch {
            min_free,
            last: Mutex::new(None),
        }
    }

    /// Whether there is room for a new message.
    pub fn check(&self, storage: &Storage) -> Result<(), Error> {
        if self.min_free == 0 {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < DISK_CHECK_EVERY => free,
            _ => {
                let free = storage.free_bytes().map_err(|e| {
                    Error::Internal(format!("cannot read the free disk space: {e}"))
                })?;
                *last = Some((Instant::now(), free));
                free
            }
        };
        if free < self.min_free {
            return Err(Error::Limit(format!(
                "the broker's disk is nearly full ({free} bytes free, below its watermark of {} \
                 bytes, limits.min_free_disk_bytes): publishing is paused; reads, subscriptions \
                 and proofs go on; the operator must free space",
                self.min_free
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_and_retry_budgets() {
        let l = Limits {
            rate_bytes_per_second: 1,
            rate_bytes_burst: 4096,
            max_envelope_bytes: 4096,
            retry_rate_per_second: 1,
            retry_burst: 2,
            team_bytes_per_day: 5000,
            ..Limits::default()
        };
        let b = PublishBudgets::new(&l);
        assert!(b.new_message("A", 3000).is_ok());
        let e = b.new_message("A", 2000).unwrap_err();
        assert!(e.to_string().contains("byte rate"), "{e}");
        // Another team has its own budget; the day quota counts per team.
        assert!(b.new_message("B", 4000).is_ok());
        assert!(b.retry("C", 10).is_ok() && b.retry("C", 10).is_ok());
        assert!(
            b.retry("C", 10)
                .unwrap_err()
                .to_string()
                .contains("retry rate")
        );
        // Retries spend the byte budget too.
        assert!(b.retry("D", 4096).is_ok());
        assert!(
            b.retry("D", 10)
                .unwrap_err()
                .to_string()
                .contains("byte rate")
        );
        let day = PublishBudgets::new(&Limits {
            team_bytes_per_day: 5000,
            ..Limits::default()
        });
        assert!(day.new_message("A", 3000).is_ok());
        let e = day.new_message("A", 3000).unwrap_err();
        assert!(e.to_string().contains("quota"), "{e}");
    }

    #[test]
    fn subscription_slots_per_team_and_in_all() {
        let s = StreamSlots::new(2, 3);
        let a1 = s.acquire("A").unwrap();
        let _a2 = s.acquire("A").unwrap();
        assert!(matches!(s.acquire("A"), Err(Error::TooManyStreams { .. })));
        let _b1 = s.acquire("B").unwrap();
        assert!(matches!(s.acquire("B"), Err(Error::Limit(_))));
        a1.read_up_to(7);
        assert_eq!(s.open(), 3);
        let a = s.per_team().into_iter().find(|t| t.team == "A").unwrap();
        assert_eq!((a.open, a.lowest), (2, Some(0)));
        _a2.read_up_to(9);
        let a = s.per_team().into_iter().find(|t| t.team == "A").unwrap();
        assert_eq!(a.lowest, Some(7));
        drop(a1);
        let a = s.per_team().into_iter().find(|t| t.team == "A").unwrap();
        assert_eq!((a.open, a.lowest), (1, Some(9)));
        assert!(s.acquire("B").is_ok());
    }
}

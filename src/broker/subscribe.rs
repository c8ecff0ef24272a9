//! Subscriptions (SPEC §7): cursors over the log. A subscription catches up
//! from storage, then waits for the writer's commit notifications and reads
//! what was committed; it never polls and never buffers more than a small
//! channel. A consumer that stops reading only stops its own task: publishers
//! and other subscribers never wait for it, and it loses nothing because it
//! reads from the log when it continues.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::broker::read::view_decoded;
use crate::broker::recent::{Decoded, RECENT, open_head};
use crate::broker::state::State;
use crate::broker::transport::ConnState;
use crate::error::Error;
use crate::proto::body::Content;
use crate::proto::{self as pb, Body, Kind, subscribe_request::Start};
use crate::rules::access::TrafficScope;

/// Records read from storage per step.
const READ_BATCH: u64 = 256;
/// Records buffered per subscription before it waits for its consumer.
const CHANNEL: usize = 16;

/// A record read by one subscription alone, or shared through the cache.
enum Shared {
    Owned(Box<Decoded>),
    Cached(Arc<Decoded>),
}

/// A subscription filter, checked against a decoded body.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    kinds: Vec<i32>,
    senders: Vec<String>,
    min_severity: i32,
    tlps: Vec<i32>,
    pub scope: TrafficScope,
}

impl Filter {
    pub fn from_proto(f: Option<&pb::Filter>) -> Result<Self, Error> {
        let Some(f) = f else {
            return Ok(Filter::default());
        };
        for k in &f.kinds {
            if Kind::try_from(*k).map_or(true, |k| k == Kind::Unspecified) {
                return Err(Error::BadRequest(format!("filter.kinds: unknown kind {k}")));
            }
        }
        if pb::Severity::try_from(f.min_severity).is_err() {
            return Err(Error::BadRequest(format!(
                "filter.min_severity: unknown severity {}",
                f.min_severity
            )));
        }
        Ok(Filter {
            kinds: f.kinds.clone(),
            senders: f.senders.clone(),
            min_severity: f.min_severity,
            tlps: f.tlps.clone(),
            scope: TrafficScope::from_selector(f.exercise.as_ref()),
        })
    }

    /// Whether the sender filter admits `sender` (all a tombstone is matched on).
    pub fn matches_sender(&self, sender: &str) -> bool {
        self.senders.is_empty() || self.senders.iter().any(|s| s == sender)
    }

    /// Whether a body passes (the exercise scope is checked by the access rule).
    pub fn matches(&self, body: &Body) -> bool {
        let (kind, severity) = match &body.content {
            Some(Content::Incident(r)) => (Kind::Incident, Some(r.severity)),
            Some(Content::Warning(w)) => (Kind::Warning, Some(w.severity)),
            Some(Content::Request(r)) => (Kind::Request, Some(r.priority)),
            Some(Content::CaseUpdate(_)) => (Kind::CaseUpdate, None),
            Some(Content::Retraction(_)) => (Kind::Retraction, None),
            None => return false,
        };
        (self.kinds.is_empty() || self.kinds.contains(&(kind as i32)))
            && (self.senders.is_empty() || self.senders.contains(&body.sender))
            && (self.tlps.is_empty() || self.tlps.contains(&body.tlp))
            && severity.is_none_or(|s| s >= self.min_severity)
    }
}

/// Checks a durable subscription name: 1–64 of `A-Za-z0-9._-`.
pub fn check_durable_name(name: &str) -> Result<(), Error> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "durable name {name:?} must be 1 to 64 characters of letters, digits, '.', '_' and '-'"
        )))
    }
}

/// Starts a subscription for `team`; the stream ends when caught up (without
/// `follow`), when the consumer goes away, or when the broker shuts down.
pub fn start(
    broker: Arc<State>,
    team: String,
    req: pb::SubscribeRequest,
    closing: watch::Receiver<bool>,
    conn: Option<Arc<ConnState>>,
) -> Result<ReceiverStream<Result<pb::Record, Status>>, Error> {
    let filter = Filter::from_proto(req.filter.as_ref())?;
    let storage = broker.log().storage();
    let mut committed = broker.log().committed();
    let cursor = match &req.start {
        None => 0,
        Some(Start::AfterSeq(s)) => *s,
        Some(Start::Durable(name)) => {
            check_durable_name(name)?;
            storage.cursor(&team, name)?
        }
        Some(Start::Tail(_)) => *committed.borrow_and_update(),
    };
    let permit = broker.slots.acquire(&team)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let span = tracing::info_span!("subscription", team = %team);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let _permit = permit;
            if let Err(status) = run(
                &broker,
                &team,
                cursor,
                req.follow,
                &filter,
                &tx,
                &mut committed,
                closing,
                conn.as_deref(),
            )
            .await
            {
                let _ = tx.send(Err(status)).await;
            }
        },
        span,
    ));
    Ok(ReceiverStream::new(rx))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    broker: &State,
    team: &str,
    mut cursor: u64,
    follow: bool,
    filter: &Filter,
    tx: &mpsc::Sender<Result<pb::Record, Status>>,
    committed: &mut watch::Receiver<u64>,
    mut closing: watch::Receiver<bool>,
    conn: Option<&ConnState>,
) -> Result<(), Status> {
    // A directory reload that withdraws the connection's certificate or
    // removes the team ends the stream at once, also mid catch-up.
    let standing = |dir: &crate::rules::directory::Directory| -> Result<(), Status> {
        if !dir.is_member(team, time::OffsetDateTime::now_utc()) {
            return Err(Error::UnknownCaller(team.to_owned()).into());
        }
        if conn.is_some_and(|c| !c.is_valid()) {
            return Err(Error::Withdrawn {
                team: team.to_owned(),
            }
            .into());
        }
        Ok(())
    };
    let storage = broker.log().storage();
    let end = *committed.borrow_and_update();
    let mut reloads = broker.directory_reloads();
    loop {
        // The directory in force now: a reload applies to open streams, and
        // a team removed from it is cut off.
        broker.member(team)?;
        let upto = if follow {
            *committed.borrow_and_update()
        } else {
            end
        };
        while cursor < upto {
            let last = upto.min(cursor + READ_BATCH);
            let dir = broker.directory();
            standing(&dir)?;
            // Far behind: one range scan. Near the tail, where live
            // subscribers read the same new records: the shared cache, so a
            // record is read and decoded once for all of them.
            let far_behind = upto - cursor > RECENT as u64 / 2;
            let batch: Vec<Shared> = if far_behind {
                storage
                    .records(cursor + 1, last)
                    .map(|r| {
                        let (seq, rec) = r?;
                        let (env, body) = open_head(&rec)?;
                        Ok(Shared::Owned(Box::new(Decoded {
                            seq,
                            rec,
                            env,
                            body,
                        })))
                    })
                    .collect::<Result<_, Error>>()
                    .map_err(Status::from)?
            } else {
                (cursor + 1..=last)
                    .map(|seq| broker.recent.get(storage, seq).map(Shared::Cached))
                    .collect::<Result<_, Error>>()
                    .map_err(Status::from)?
            };
            for item in batch {
                let (d, owned_env) = match item {
                    Shared::Owned(mut d) => {
                        let env = std::mem::take(&mut d.env);
                        (Arc::new(*d), Some(env))
                    }
                    Shared::Cached(d) => (d, None),
                };
                cursor = d.seq;
                if conn.is_some_and(|c| !c.is_valid()) {
                    standing(&dir)?;
                }
                // Content filters look at the body, so they apply only to
                // records delivered in full: a tombstone must not reveal the
                // kind, severity or TLP of what was withheld.
                let env = || owned_env.unwrap_or_else(|| d.env.clone());
                let view = view_decoded(
                    broker,
                    team,
                    d.seq,
                    &d.rec,
                    env,
                    &d.body,
                    &filter.scope,
                    &dir,
                )
                .map_err(Status::from)?;
                let Some(record) = view else { continue };
                let wanted = if record.envelope.is_some() {
                    filter.matches(&d.body)
                } else {
                    filter.matches_sender(&d.body.sender)
                };
                if wanted && tx.send(Ok(record)).await.is_err() {
                    return Ok(()); // the consumer went away
                }
            }
            cursor = cursor.max(last);
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return Ok(()) },
            _ = reloads.changed() => {}
            _ = closing.changed() => {
                return Err(Status::unavailable("the broker is shutting down; resume from your last seq"));
            }
            _ = tx.closed() => return Ok(()),
            _ = async { match conn { Some(c) => c.withdrawn().await, None => std::future::pending().await } } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IncidentReport, Severity, Tlp};

    fn incident(sender: &str, sev: Severity, tlp: Tlp) -> Body {
        Body {
            sender: sender.into(),
            tlp: tlp as i32,
            content: Some(Content::Incident(IncidentReport {
                severity: sev as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn filters() {
        let all = Filter::default();
        let b = incident("CN-CNCERT", Severity::Medium, Tlp::Green);
        assert!(all.matches(&b));
        let f = Filter::from_proto(Some(&pb::Filter {
            kinds: vec![Kind::Warning as i32],
            ..Default::default()
        }))
        .unwrap();
        assert!(!f.matches(&b));
        let f = Filter::from_proto(Some(&pb::Filter {
            min_severity: Severity::High as i32,
            ..Default::default()
        }))
        .unwrap();
        assert!(!f.matches(&b));
        assert!(f.matches(&incident("CN-CNCERT", Severity::Critical, Tlp::Green)));
        let retraction = Body {
            content: Some(Content::Retraction(Default::default())),
            ..Default::default()
        };
        assert!(
            f.matches(&retraction),
            "retractions pass the severity filter"
        );
        let f = Filter::from_proto(Some(&pb::Filter {
            senders: vec!["RU-GOVCERT".into()],
            tlps: vec![Tlp::Green as i32],
            ..Default::default()
        }))
        .unwrap();
        assert!(!f.matches(&b));
        assert!(f.matches(&incident("RU-GOVCERT", Severity::Low, Tlp::Green)));
        assert!(!f.matches(&incident("RU-GOVCERT", Severity::Low, Tlp::Red)));
        assert!(
            Filter::from_proto(Some(&pb::Filter {
                kinds: vec![99],
                ..Default::default()
            }))
            .is_err()
        );
    }

    /// What delivery reads from a body: id, sender, TLP, audience,
    /// exercise, and the content's kind with its severity or priority.
    #[test]
    fn durable_names() {
        assert!(check_durable_name("soc-feed.1").is_ok());
        assert!(check_durable_name("").is_err());
        assert!(check_durable_name("a b").is_err());
        assert!(check_durable_name(&"x".repeat(65)).is_err());
    }
}

//! The durable, append-only log: one writer thread that checks the rules that
//! depend on what is already logged (duplicates, retraction targets, case
//! transitions), assigns gap-free seqs, extends the Merkle tree, signs the new
//! tree head, and commits each group of publishes with one device sync.
//!
//! Every check that reads the log happens on the writer, in seq order, against
//! the log plus the records of the group being built: two racing updates to one
//! case cannot both win, and two identical publishes get one record. Durable
//! cursor moves ride in the same groups: many `CommitCursor` calls cost one
//! device sync, not one each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::error::Error;
use crate::log::merkle::{self, Frontier, tree_head_message};
use crate::log::storage::{Storage, StorageError, StoredHead, StoredRecord, WriteBatch};
use crate::proto::body::Content;
use crate::proto::{Body, CaseState, Envelope, Receipt, SignedTreeHead};
use crate::rules::cases::{self, Role};
use crate::rules::envelope;

/// Records committed together with one device sync, per group; described
/// with the broker's other metrics in `broker::metrics`.
pub const METRIC_COMMIT_GROUP_RECORDS: &str = "certex_commit_group_records";
/// Time to write and sync one commit group of records.
pub const METRIC_COMMIT_SECONDS: &str = "certex_commit_duration_seconds";

/// Most publishes committed together.
const MAX_GROUP: usize = 1024;
/// Most envelope bytes committed together.
const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Most envelope bytes waiting for the writer. A submission holds its share
/// until the writer is done with it, even if its caller went away.
const MAX_QUEUE_BYTES: usize = 64 * 1024 * 1024;

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Internal(e.to_string())
    }
}

/// A publish that passed the stateless checks.
pub struct Submission {
    pub envelope: Envelope,
    pub body: Body,
    /// For a `group` audience: the group's members at acceptance, stored
    /// with the record as its readers (SPEC §5).
    pub group_members: Vec<String>,
    /// Set for a record another broker of the federation relayed here.
    pub relayed: Option<Relayed>,
}

/// Where a relayed record comes from (SPEC §12).
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The relaying broker, and the record's seq in its log (0 for a case
    /// update handed to this broker as the case's authority).
    pub broker: String,
    pub seq: u64,
    /// The relaying broker is the authority of the case this update belongs
    /// to: its order stands, even where this log would judge a transition
    /// differently, so both brokers hold the same case state.
    pub case_authority: bool,
    /// The origin's tlog-proof bundle (no `extra` line), checked on receipt.
    pub proof: Option<String>,
}

enum Job {
    Publish {
        sub: Box<Submission>,
        reply: oneshot::Sender<Result<Receipt, Error>>,
        /// Its share of [`MAX_QUEUE_BYTES`], released with the job.
        _queued: OwnedSemaphorePermit,
    },
    /// Move `team`'s durable cursor `name` forward to `seq` (never back);
    /// a team has at most `max_names` cursors.
    Cursor {
        team: String,
        name: String,
        seq: u64,
        max_names: usize,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    /// Sync the Merkle node file after the groups before this job (a clean
    /// shutdown: the next start has nothing to recompute).
    Close {
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// A cursor move's reply and the (team, name) it moved, or why not.
type CursorReply = (
    oneshot::Sender<Result<u64, Error>>,
    Result<(String, String), Error>,
);

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Publish { sub, .. } => sub.envelope.body.len(),
            Job::Cursor { .. } => 64,
            Job::Close { .. } => 0,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Converts milliseconds since the epoch to a protobuf timestamp.
pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Decodes a stored record's envelope and body.
pub fn open_record(rec: &StoredRecord) -> Result<(Envelope, Body), Error> {
    let env = Envelope::decode(rec.envelope.clone())
        .map_err(|e| Error::Internal(format!("stored envelope does not decode: {e}")))?;
    let body = envelope::decode_body(&env)
        .map_err(|e| Error::Internal(format!("stored body does not decode: {e}")))?;
    Ok((env, body))
}

/// Handle to the log, shared by all RPCs.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::Sender<Job>,
    /// Envelope bytes waiting for the writer, bounded.
    queue: Arc<Semaphore>,
    storage: Arc<Storage>,
    head: Arc<RwLock<SignedTreeHead>>,
    committed: watch::Receiver<u64>,
}

impl Log {
    /// Starts the writer over `storage`, signing tree heads with `key`.
    pub fn start(storage: Arc<Storage>, key: SigningKey) -> Result<Self, Error> {
        let size = storage.last_seq()?;
        let frontier = Frontier::load(size, storage.as_ref())
            .map_err(|e| Error::Internal(format!("cannot rebuild the Merkle frontier: {e}")))?;
        let key_id = envelope::key_id(&key.verifying_key());
        let mut writer = Writer {
            storage: storage.clone(),
            frontier,
            key,
            key_id,
            last_ts: 0,
            last_received: 0,
            head: Arc::new(RwLock::new(SignedTreeHead::default())),
            committed: watch::channel(size).0,
        };
        match storage.latest_head()? {
            Some(h) if h.tree_size == size => {
                writer.last_ts = h.timestamp_ms;
                *writer.head.write().unwrap_or_else(|p| p.into_inner()) = writer.to_proto(&h);
            }
            previous => {
                // First start, or a crash between an append and its head:
                // sign a head for what is on disk.
                writer.last_ts = previous.map_or(0, |h| h.timestamp_ms);
                let mut batch = WriteBatch::default();
                let head = writer.sign_head(&mut batch);
                storage.commit(batch)?;
                *writer.head.write().unwrap_or_else(|p| p.into_inner()) = head;
            }
        }
        if let Some(rec) = storage.record(size)? {
            writer.last_received = rec.received_at_ms;
        }
        let head = writer.head.clone();
        let committed = writer.committed.subscribe();
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        std::thread::Builder::new()
            .name("certex-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Internal(format!("cannot start the log writer: {e}")))?;
        Ok(Log {
            tx,
            queue: Arc::new(Semaphore::new(MAX_QUEUE_BYTES)),
            storage,
            head,
            committed,
        })
    }

    /// Appends a checked submission; the receipt means it is on the device.
    pub async fn append(&self, sub: Submission) -> Result<Receipt, Error> {
        let reply = self.enqueue(sub).await?;
        reply.await.map_err(|_| Error::Unavailable)?
    }

    /// Hands a checked submission to the writer and returns where its
    /// receipt will come: submissions enqueued one after another are
    /// appended in that order (a publish stream's envelopes keep theirs).
    pub async fn enqueue(
        &self,
        sub: Submission,
    ) -> Result<oneshot::Receiver<Result<Receipt, Error>>, Error> {
        let share = sub.envelope.body.len().clamp(1, MAX_QUEUE_BYTES);
        let queued = self
            .queue
            .clone()
            .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Error::Unavailable)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Publish {
                sub: Box::new(sub),
                reply,
                _queued: queued,
            })
            .await
            .map_err(|_| Error::Unavailable)?;
        Ok(rx)
    }

    /// Appends submissions in the order given (one may refer to an earlier
    /// one); each answer as [`Log::append`] gives it, in the same order.
    pub async fn append_in_order(&self, subs: Vec<Submission>) -> Vec<Result<Receipt, Error>> {
        let mut waiting = Vec::with_capacity(subs.len());
        for sub in subs {
            let share = sub.envelope.body.len().clamp(1, MAX_QUEUE_BYTES);
            let queued = match self
                .queue
                .clone()
                .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
                .await
            {
                Ok(q) => q,
                Err(_) => {
                    waiting.push(None);
                    continue;
                }
            };
            let (reply, rx) = oneshot::channel();
            let sent = self
                .tx
                .send(Job::Publish {
                    sub: Box::new(sub),
                    reply,
                    _queued: queued,
                })
                .await;
            waiting.push(sent.ok().map(|()| rx));
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(match rx {
                Some(rx) => rx.await.unwrap_or(Err(Error::Unavailable)),
                None => Err(Error::Unavailable),
            });
        }
        out
    }

    /// Moves `team`'s durable cursor `name` forward to `seq` (never back),
    /// committed with the next group; returns its position once on the
    /// device. A new name past `max_names` per team is refused.
    pub async fn advance_cursor(
        &self,
        team: &str,
        name: &str,
        seq: u64,
        max_names: usize,
    ) -> Result<u64, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Cursor {
                team: team.to_owned(),
                name: name.to_owned(),
                seq,
                max_names,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable)?;
        rx.await.map_err(|_| Error::Unavailable)?
    }

    /// Commits what is queued, then syncs the Merkle node file so the next
    /// start finds the log complete (called once serving has stopped).
    pub async fn close(&self) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Close { reply })
            .await
            .map_err(|_| Error::Unavailable)?;
        rx.await.map_err(|_| Error::Unavailable)?
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn storage_arc(&self) -> Arc<Storage> {
        self.storage.clone()
    }

    /// The latest signed tree head.
    pub fn head(&self) -> SignedTreeHead {
        self.head.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The committed log size, updated after every durable commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

/// A record accepted into the group being built.
struct Pending {
    receipt: Receipt,
    body: Body,
    also_readers: Vec<String>,
}

/// What a job turned into.
enum Outcome {
    /// Answer now (an error, or the receipt of an earlier commit).
    Done(Result<Receipt, Error>),
    /// Answer after the commit with the receipt of this seq.
    After(u64, bool),
}

struct Writer {
    storage: Arc<Storage>,
    frontier: Frontier,
    key: SigningKey,
    key_id: String,
    last_ts: u64,
    last_received: u64,
    head: Arc<RwLock<SignedTreeHead>>,
    committed: watch::Sender<u64>,
}

/// The state of the group being built, layered over the log.
#[derive(Default)]
struct Group {
    batch: WriteBatch,
    by_id: HashMap<(String, String), u64>,
    records: HashMap<u64, Pending>,
    retracted: HashSet<u64>,
    case_states: HashMap<u64, CaseState>,
    /// Durable cursors moved in this group: (team, name) → position.
    cursors: HashMap<(String, String), u64>,
    /// Durable names each team created in this group.
    new_cursor_names: HashMap<String, usize>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = 0;
            let mut jobs = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                if let Job::Close { reply } = job {
                    close = Some(reply);
                    break;
                }
                bytes += job.bytes();
                jobs.push(job);
                if jobs.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !jobs.is_empty() {
                self.commit_group(jobs);
            }
            if let Some(reply) = close {
                let _ = reply.send(self.storage.sync_nodes().map_err(Error::from));
            }
        }
        tracing::debug!("log writer stopped");
    }

    fn commit_group(&mut self, jobs: Vec<Job>) {
        let received = now_ms().max(self.last_received);
        let mut group = Group::default();
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut cursors: Vec<CursorReply> = Vec::new();
        for job in jobs {
            match job {
                Job::Publish { sub, reply, .. } => {
                    let outcome = match self.accept(*sub, received, &mut group) {
                        Ok(o) => o,
                        Err(e) => Outcome::Done(Err(e)),
                    };
                    outcomes.push(outcome);
                    replies.push(reply);
                }
                Job::Cursor {
                    team,
                    name,
                    seq,
                    max_names,
                    reply,
                } => {
                    let r = self
                        .move_cursor(&mut group, &team, &name, seq, max_names)
                        .map(|()| (team, name));
                    cursors.push((reply, r));
                }
                // `run` takes it out of the group.
                Job::Close { .. } => {}
            }
        }
        let size = self.frontier.size();
        let result = if group.records.is_empty() {
            let head = self.head.read().unwrap_or_else(|p| p.into_inner()).clone();
            if group.cursors.is_empty() {
                Ok(head)
            } else {
                self.storage
                    .commit(std::mem::take(&mut group.batch))
                    .map(|()| head)
            }
        } else {
            let head = self.sign_head(&mut group.batch);
            let start = std::time::Instant::now();
            let r = self
                .storage
                .commit(std::mem::take(&mut group.batch))
                .map(|()| head);
            metrics::histogram!(METRIC_COMMIT_SECONDS).record(start.elapsed().as_secs_f64());
            metrics::histogram!(METRIC_COMMIT_GROUP_RECORDS).record(group.records.len() as f64);
            r
        };
        match result {
            Ok(head) => {
                if !group.records.is_empty() {
                    self.last_received = received;
                    *self.head.write().unwrap_or_else(|p| p.into_inner()) = head;
                    self.committed.send_replace(size);
                }
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let answer = match outcome {
                        Outcome::Done(r) => r,
                        Outcome::After(seq, duplicate) => {
                            let mut receipt = group.records[&seq].receipt.clone();
                            receipt.duplicate = duplicate;
                            receipt.tree_size = size;
                            Ok(receipt)
                        }
                    };
                    let _ = reply.send(answer);
                }
                for (reply, r) in cursors {
                    let _ = reply.send(r.map(|key| group.cursors[&key]));
                }
            }
            Err(e) => {
                // What sled holds in memory may now differ from the device
                // (a failed fsync can drop dirty pages). Refuse the group and
                // stop: recovery restarts from what is actually on disk, and
                // clients retry (identical retries are idempotent).
                tracing::error!(error = %e, "commit failed; nothing of this group was acknowledged; stopping the broker");
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let answer = match outcome {
                        Outcome::Done(r) => r,
                        Outcome::After(..) => Err(Error::Internal(format!("commit failed: {e}"))),
                    };
                    let _ = reply.send(answer);
                }
                for (reply, _) in cursors {
                    let _ = reply.send(Err(Error::Internal(format!("commit failed: {e}"))));
                }
                std::process::exit(70);
            }
        }
    }

    /// Puts a cursor move into the group: forward only, at most `max_names`
    /// names per team (counting names new in this group).
    fn move_cursor(
        &mut self,
        group: &mut Group,
        team: &str,
        name: &str,
        seq: u64,
        max_names: usize,
    ) -> Result<(), Error> {
        let key = (team.to_owned(), name.to_owned());
        let current = match group.cursors.get(&key) {
            Some(s) => *s,
            None => {
                let (names, exists) = self.storage.cursor_names(team, name)?;
                if !exists {
                    let new_here = group.new_cursor_names.entry(team.to_owned()).or_insert(0);
                    if names + *new_here >= max_names {
                        return Err(Error::Limit(format!(
                            "team {team} already has {} durable subscription names, the broker's \
                             limit (limits.max_durable_names_per_team); reuse one",
                            names + *new_here
                        )));
                    }
                    *new_here += 1;
                }
                self.storage.cursor(team, name)?
            }
        };
        let next = current.max(seq);
        group.batch.put_cursor(team, name, next);
        group.cursors.insert(key, next);
        Ok(())
    }

    fn sign_head(&mut self, batch: &mut WriteBatch) -> SignedTreeHead {
        let ts = now_ms().max(self.last_ts);
        self.last_ts = ts;
        let size = self.frontier.size();
        let root = self.frontier.root();
        let signature = self.key.sign(&tree_head_message(size, &root, ts));
        let head = StoredHead {
            tree_size: size,
            root_hash: root.to_vec(),
            timestamp_ms: ts,
            signature: signature.to_bytes().to_vec(),
        };
        batch.put_head(&head);
        self.to_proto(&head)
    }

    fn to_proto(&self, h: &StoredHead) -> SignedTreeHead {
        SignedTreeHead {
            tree_size: h.tree_size,
            root_hash: h.root_hash.clone(),
            timestamp_ms: h.timestamp_ms,
            signature: h.signature.clone(),
            key_id: self.key_id.clone(),
        }
    }

    /// Looks a `(id, sender)` up in the group, then in the log.
    fn find(&self, group: &Group, id: &str, sender: &str) -> Result<Option<u64>, Error> {
        if let Some(seq) = group.by_id.get(&(id.to_owned(), sender.to_owned())) {
            return Ok(Some(*seq));
        }
        Ok(self.storage.seq_of(id, sender)?)
    }

    /// Body and extra readers of record `seq`, from the group or the log.
    fn load(&self, group: &Group, seq: u64) -> Result<(Body, Vec<String>), Error> {
        if let Some(p) = group.records.get(&seq) {
            return Ok((p.body.clone(), p.also_readers.clone()));
        }
        let rec = self
            .storage
            .record(seq)?
            .ok_or_else(|| Error::Internal(format!("indexed record {seq} is missing")))?;
        let (_, body) = open_record(&rec)?;
        Ok((body, rec.also_readers))
    }

    fn accept(
        &mut self,
        sub: Submission,
        received: u64,
        group: &mut Group,
    ) -> Result<Outcome, Error> {
        let body = sub.body;
        let relayed = sub.relayed;
        let bytes = envelope::log_bytes(&sub.envelope);
        let leaf = merkle::leaf_hash(&bytes);

        // Same (sender, id): the original receipt for identical bytes.
        if let Some(seq) = self.find(group, &body.id, &body.sender)? {
            if let Some(p) = group.records.get(&seq) {
                return if p.receipt.leaf_hash == leaf {
                    Ok(Outcome::After(seq, true))
                } else {
                    Err(already(&body, seq))
                };
            }
            let rec = self
                .storage
                .record(seq)?
                .ok_or_else(|| Error::Internal(format!("indexed record {seq} is missing")))?;
            if rec.leaf_hash != leaf {
                return Err(already(&body, seq));
            }
            return Ok(Outcome::Done(Ok(Receipt {
                seq,
                id: body.id,
                received_at: Some(timestamp(rec.received_at_ms)),
                leaf_hash: rec.leaf_hash,
                tree_size: *self.committed.borrow(),
                duplicate: true,
            })));
        }

        let seq = self.frontier.size() + 1;
        let mut also_readers = sub.group_members;
        match &body.content {
            Some(Content::Retraction(r)) => {
                let target = self.find(group, &r.target, &body.sender)?.ok_or_else(|| {
                    Error::Precondition(format!(
                        "you have no message {} to retract: only its sender can retract a message",
                        r.target
                    ))
                })?;
                let (tbody, treaders) = self.load(group, target)?;
                if matches!(tbody.content, Some(Content::Retraction(_))) {
                    return Err(Error::Precondition(format!(
                        "message {} is itself a retraction and cannot be retracted",
                        r.target
                    )));
                }
                if matches!(tbody.content, Some(Content::CaseUpdate(_))) {
                    return Err(Error::Precondition(format!(
                        "message {} is a case update and cannot be retracted: \
                         correct the case with a further update",
                        r.target
                    )));
                }
                if group.retracted.contains(&target)
                    || self.storage.retraction_of(target)?.is_some()
                {
                    return Err(Error::Precondition(format!(
                        "message {} is already retracted",
                        r.target
                    )));
                }
                same_distribution(&body, &tbody, "retraction", "the message it retracts")?;
                also_readers = treaders;
                group.retracted.insert(target);
                group.batch.put_retraction(target, seq);
            }
            Some(Content::CaseUpdate(u)) => {
                let (request_seq, request) =
                    self.find_case(group, &u.requester, &u.case_id, &body.sender)?;
                if group.retracted.contains(&request_seq)
                    || self.storage.retraction_of(request_seq)?.is_some()
                {
                    return Err(Error::Precondition(format!(
                        "case {}: the assistance request was retracted by its sender",
                        u.case_id
                    )));
                }
                let role = if body.sender == request.sender {
                    Role::Requester
                } else {
                    Role::Addressee
                };
                same_distribution(&body, &request, "case update", "its assistance request")?;
                let current = match group.case_states.get(&request_seq) {
                    Some(s) => *s,
                    None => self
                        .storage
                        .case_state(request_seq)?
                        .and_then(|s| CaseState::try_from(s).ok())
                        .unwrap_or(CaseState::Open),
                };
                let to = CaseState::try_from(u.transition).unwrap_or(CaseState::Unspecified);
                let next = match cases::transition(current, to, role) {
                    Ok(next) => next,
                    // The case's authority ordered it: its state stands.
                    Err(why)
                        if relayed.as_ref().is_some_and(|r| r.case_authority)
                            && to != CaseState::Unspecified =>
                    {
                        tracing::warn!(request_seq, %why, "case authority's order differs from this log's; following the authority");
                        to
                    }
                    Err(why) => {
                        return Err(Error::Precondition(format!("case {}: {why}", u.case_id)));
                    }
                };
                group.case_states.insert(request_seq, next);
                group.batch.put_case_state(request_seq, next as i32);
                group.batch.put_case_update(request_seq, seq);
                also_readers = vec![request.sender.clone()];
            }
            Some(Content::Request(_)) => {
                // A case is (requester, request id): the id is the
                // requester's own, so no other team's ids are consulted and
                // none is disclosed.
                group.case_states.insert(seq, CaseState::Open);
                group.batch.put_case_state(seq, CaseState::Open as i32);
            }
            _ => {}
        }

        for (level, index, hash) in self.frontier.push(leaf) {
            group.batch.put_node(level, index, &hash);
        }
        let stored = StoredRecord {
            received_at_ms: received,
            leaf_hash: leaf.to_vec(),
            envelope: bytes.into(),
            also_readers: also_readers.clone(),
        };
        group.batch.put_record(seq, &body.id, &body.sender, &stored);
        if let Some(r) = relayed.as_ref().filter(|r| r.seq > 0) {
            group.batch.put_origin(seq, &r.broker, r.seq);
            if let Some(p) = &r.proof {
                group.batch.put_origin_proof(seq, p);
            }
        }
        group
            .by_id
            .insert((body.id.clone(), body.sender.clone()), seq);
        let receipt = Receipt {
            seq,
            id: body.id.clone(),
            received_at: Some(timestamp(received)),
            leaf_hash: leaf.to_vec(),
            tree_size: 0,
            duplicate: false,
        };
        group.records.insert(
            seq,
            Pending {
                receipt,
                body,
                also_readers,
            },
        );
        Ok(Outcome::After(seq, false))
    }

    /// The assistance request `(requester, case_id)` that `team` is a party
    /// to. Not found and not a party are answered alike.
    fn find_case(
        &self,
        group: &Group,
        requester: &str,
        case_id: &str,
        team: &str,
    ) -> Result<(u64, Body), Error> {
        let missing = || {
            Error::Precondition(format!(
                "no assistance request {case_id} of {requester} of which you are the requester or the addressee"
            ))
        };
        let seq = self.find(group, case_id, requester)?.ok_or_else(missing)?;
        let (body, _) = self.load(group, seq)?;
        match &body.content {
            Some(Content::Request(req)) if body.sender == team || req.to == team => Ok((seq, body)),
            _ => Err(missing()),
        }
    }
}

fn already(body: &Body, seq: u64) -> Error {
    Error::AlreadyExists {
        sender: body.sender.clone(),
        id: body.id.clone(),
        seq,
    }
}

/// Case updates and retractions take TLP, audience and exercise from the
/// record they refer to (SPEC §5).
fn same_distribution(body: &Body, target: &Body, what: &str, of: &str) -> Result<(), Error> {
    let field = if body.tlp != target.tlp {
        "tlp"
    } else if body.audience != target.audience {
        "audience"
    } else if body.exercise != target.exercise {
        "exercise"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        field,
        format!(
            "a {what} must carry the same tlp, audience and exercise as {of} (the CLI fills them in)"
        ),
    ))
}

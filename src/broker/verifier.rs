//! The signature pool (SPEC §4's signature check, off the async workers):
//! a fixed set of OS threads, one per core, fed by a bounded queue. Each
//! thread takes everything queued when it wakes (up to [`BATCH_MAX`]) and
//! checks it as one batch with [`rules::signature::verify_batch`], which gives
//! `verify_strict`'s answer for every item; concurrent publishes are what
//! fill a batch, and a lone publish is checked alone, without waiting.
//! Callers wait for room when the queue is full (backpressure); the threads
//! end once the pool is dropped with the broker's state and the queue is
//! empty.
//!
//! [`rules::signature::verify_batch`]: crate::rules::signature::verify_batch

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::broker::metrics;
use crate::error::Error;
use crate::rules::envelope::SignatureError;
use crate::rules::signature::{Item, KeyCache, verify_batch};

/// The most signatures one thread checks as a batch: past this the
/// multiscalar multiplication saves little more, and others wait longer.
pub const BATCH_MAX: usize = 64;

/// Queued checks per thread before callers wait.
const QUEUE_PER_THREAD: usize = 4 * BATCH_MAX;

/// One signature to check and where its answer goes.
struct Job {
    key: VerifyingKey,
    key_id: String,
    body: Bytes,
    signature: Vec<u8>,
    reply: oneshot::Sender<Result<(), SignatureError>>,
    /// The job's place in the queue, given back once answered.
    _room: OwnedSemaphorePermit,
}

/// The pool; dropping it stops the threads once they have answered what is
/// queued.
pub struct SignaturePool {
    jobs: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
}

impl SignaturePool {
    /// A pool of one thread per core.
    pub fn new() -> Result<Self, Error> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self::with_threads(threads)
    }

    /// A pool of `threads` threads.
    pub fn with_threads(threads: usize) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("certex-verify-{i}"))
                .spawn(move || work(&queue))
                .map_err(|e| Error::Internal(format!("cannot start a signature thread: {e}")))?;
        }
        Ok(SignaturePool {
            jobs,
            room: Arc::new(Semaphore::new(threads.max(1) * QUEUE_PER_THREAD)),
        })
    }

    /// Checks `signature` over `body` (the exact bytes as they travel)
    /// under `key`, named `key_id` in the answer; waits for room in the
    /// queue, then for the answer.
    pub async fn verify(
        &self,
        key: VerifyingKey,
        key_id: &str,
        body: Bytes,
        signature: &[u8],
    ) -> Result<Result<(), SignatureError>, Error> {
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key,
            key_id: key_id.to_owned(),
            body,
            signature: signature.to_vec(),
            reply,
            _room: room,
        };
        self.jobs.send(job).map_err(|_| Error::Unavailable)?;
        answer.await.map_err(|_| Error::Unavailable)
    }
}

/// One thread: waits for a job, takes what else is queued, checks them
/// together, answers each. Ends when the pool is gone and the queue empty.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut keys = KeyCache::default();
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        {
            // One thread waits on the queue at a time; the other works.
            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            match queue.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
            while batch.len() < BATCH_MAX {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        metrics::verify_batch(batch.len());
        let items: Vec<Item> = batch
            .iter()
            .map(|j| Item {
                key: &j.key,
                key_id: &j.key_id,
                body: &j.body,
                signature: &j.signature,
            })
            .collect();
        let answers = verify_batch(&items, &mut keys);
        drop(items);
        for (job, answer) in batch.drain(..).zip(answers) {
            // Its room first, so that a caller answered finds it free.
            let Job { reply, _room, .. } = job;
            drop(_room);
            // The caller may have gone (its call was cancelled).
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::envelope::seal;
    use ed25519_dalek::SigningKey;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_get_their_own_answers() {
        let pool = Arc::new(SignaturePool::with_threads(2).unwrap());
        let key = SigningKey::from_bytes(&[5; 32]);
        let calls = (0..500u32).map(|i| {
            let (pool, key) = (pool.clone(), key.clone());
            tokio::spawn(async move {
                let env = seal(i.to_be_bytes().repeat(100), &key);
                let mut sig = env.signature.clone();
                if i % 7 == 3 {
                    sig[1] ^= 1;
                }
                let answer = pool
                    .verify(key.verifying_key(), &env.key_id, env.body, &sig)
                    .await
                    .unwrap();
                (i, answer)
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let (i, answer) = call.await.unwrap();
            assert_eq!(answer.is_err(), i % 7 == 3, "call {i}: {answer:?}");
        }
    }

    #[tokio::test]
    async fn callers_beyond_the_queue_wait_and_are_answered() {
        let pool = Arc::new(SignaturePool::with_threads(1).unwrap());
        let key = SigningKey::from_bytes(&[6; 32]);
        let env = seal(vec![1; 64], &key);
        // More calls than the queue holds: every one is answered.
        let calls: Vec<_> = (0..3 * QUEUE_PER_THREAD)
            .map(|_| {
                let (pool, env, vk) = (pool.clone(), env.clone(), key.verifying_key());
                tokio::spawn(
                    async move { pool.verify(vk, &env.key_id, env.body, &env.signature).await },
                )
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), Ok(()));
        }
        assert_eq!(pool.room.available_permits(), QUEUE_PER_THREAD);
    }
}

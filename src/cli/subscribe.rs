//! `certex subscribe`: records as JSON lines, each verified against the
//! local directory. With `--follow`, a feed that survives broker restarts
//! and dropped connections: it reconnects with capped, jittered exponential
//! backoff and resumes after the last seq it printed, so every record
//! prints once, in order.

use std::time::Duration;

use clap::Args;

use crate::cli::args::{CliError, Conn, ExitClass, ScopeArgs, print_json};
use crate::client::connection::{Client, ClientError, transport_failure};
use crate::proto::{self as pb, subscribe_request::Start};

/// The first wait before reconnecting…
const FIRST_WAIT: Duration = Duration::from_millis(200);
/// …doubled after each failed attempt, up to this.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How many verification failures the final error line names.
const NAMED_FAILURES: usize = 10;

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    /// Only these kinds; repeatable.
    #[arg(long = "kind", value_parser = crate::cli::args::kind_words())]
    pub kinds: Vec<String>,
    /// Only from these teams; repeatable.
    #[arg(long = "sender")]
    pub senders: Vec<String>,
    /// Only incidents/warnings (requests: priority) at least this severe.
    #[arg(long, value_parser = crate::cli::args::words::<pb::Severity>())]
    pub min_severity: Option<String>,
    /// Only these TLP labels; repeatable.
    #[arg(long = "tlp", value_parser = crate::cli::args::words::<pb::Tlp>())]
    pub tlps: Vec<String>,
    /// Records after this seq (0 = from the first record).
    #[arg(long, conflicts_with_all = ["durable", "tail"])]
    pub from: Option<u64>,
    /// Resume after the position committed under this name, and commit what is printed.
    #[arg(long, conflicts_with = "tail")]
    pub durable: Option<String>,
    /// Only records committed from now on.
    #[arg(long)]
    pub tail: bool,
    /// Keep running and print new records as they commit; if the
    /// connection is lost (the broker restarts), reconnect with backoff and
    /// resume after the last seq printed.
    #[arg(long)]
    pub follow: bool,
    /// Stop after printing this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub conn: Conn,
}

impl SubscribeArgs {
    /// The wire request these flags describe.
    pub fn request(&self) -> Result<pb::SubscribeRequest, CliError> {
        use crate::rules::vocab::parse;
        let kinds = crate::cli::args::parse_kinds(&self.kinds)?;
        let tlps = self
            .tlps
            .iter()
            .map(|t| {
                parse::<pb::Tlp>(t)
                    .map(|t| t as i32)
                    .map_err(|e| CliError::usage(format!("--tlp: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let min_severity = match &self.min_severity {
            None => 0,
            Some(s) => parse::<pb::Severity>(s)
                .map_err(|e| CliError::usage(format!("--min-severity: {e}")))?
                as i32,
        };
        let start = match (&self.durable, self.tail, self.from) {
            (Some(name), _, _) => Start::Durable(name.clone()),
            (None, true, _) => Start::Tail(true),
            (None, false, from) => Start::AfterSeq(from.unwrap_or(0)),
        };
        Ok(pb::SubscribeRequest {
            start: Some(start),
            filter: Some(pb::Filter {
                kinds,
                senders: self.senders.clone(),
                min_severity,
                tlps,
                exercise: Some(self.scope.scope().to_selector()),
            }),
            follow: self.follow,
        })
    }
}

/// Runs `certex subscribe`.
pub async fn run(args: SubscribeArgs) -> Result<(), CliError> {
    let mut req = args.request()?;
    // The first connection must work: a wrong URL or certificate fails the
    // command at once, even with --follow.
    let mut client = args.conn.connect().await?;
    if args.follow && args.tail {
        // The tail as a seq, so that a reconnect before the first record
        // still starts where the feed did.
        let head = client
            .transparency()
            .get_head(pb::GetHeadRequest::default())
            .await
            .map_err(ClientError::from)?
            .into_inner();
        req.start = Some(Start::AfterSeq(head.tree_size));
    }
    let mut feed = Feed::default();
    if !args.follow {
        feed.pump(&client, req, &args).await?;
        return feed.outcome();
    }
    let stop = crate::cli::args::shutdown_signal();
    tokio::pin!(stop);
    let mut backoff = Backoff::new(FIRST_WAIT, MAX_WAIT);
    loop {
        let resume = feed.resume(&req);
        let run = tokio::select! {
            r = feed.pump(&client, resume, &args) => Some(r),
            _ = &mut stop => None,
        };
        let mut lost = match run {
            None | Some(Ok(())) => return feed.outcome(),
            Some(Err(e)) if retryable(&e) => e,
            Some(Err(e)) => return Err(e),
        };
        if feed.opened {
            backoff.reset();
        }
        let mut notice = "connection lost";
        client = loop {
            let wait = backoff.next();
            // "connection lost (…)" once, not twice.
            let why = lost
                .message
                .strip_prefix("connection lost (")
                .and_then(|w| w.strip_suffix(')'));
            eprintln!(
                "certex: {notice} ({}); reconnecting in {:.1} s",
                why.unwrap_or(&lost.message),
                wait.as_secs_f64()
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => return feed.outcome(),
            }
            match args.conn.connect().await {
                Ok(c) => break c,
                Err(e) if retryable(&e) => {
                    lost = e;
                    notice = "reconnect failed";
                }
                Err(e) => return Err(e),
            }
        };
        match feed.last {
            Some(seq) => eprintln!("certex: reconnected; resuming after seq {seq}"),
            None => eprintln!("certex: reconnected"),
        }
        feed.opened = false;
    }
}

/// Whether `--follow` reconnects after this failure: the connection was
/// lost or could not be made (see [`stream_error`]).
fn retryable(e: &CliError) -> bool {
    e.class == ExitClass::Connection
}

/// A failed subscription call: UNAVAILABLE from the broker (it is shutting
/// down and says to resume from the last seq) is the connection going away,
/// not a refusal.
fn stream_error(s: tonic::Status) -> CliError {
    if s.code() == tonic::Code::Unavailable && transport_failure(&s).is_none() {
        return CliError::of(ExitClass::Connection, s.message().to_owned());
    }
    ClientError::from(s).into()
}

/// What a subscription has printed so far, across reconnections.
#[derive(Default)]
struct Feed {
    printed: u64,
    /// The last seq printed.
    last: Option<u64>,
    /// Whether the subscription opened on the current connection.
    opened: bool,
    /// How many printed records failed verification, and the first reasons.
    failed: u64,
    reasons: Vec<String>,
}

impl Feed {
    /// The request that carries on after what was printed: after the last
    /// seq printed, else where the command asked to start.
    fn resume(&self, req: &pb::SubscribeRequest) -> pb::SubscribeRequest {
        let mut req = req.clone();
        if let Some(seq) = self.last {
            req.start = Some(Start::AfterSeq(seq));
        }
        req
    }

    /// Prints records until the stream ends, the limit is reached or the
    /// call fails. With `--follow`, a stream that ends is a lost connection.
    async fn pump(
        &mut self,
        client: &Client,
        req: pb::SubscribeRequest,
        args: &SubscribeArgs,
    ) -> Result<(), CliError> {
        if let (Some(name), Some(seq)) = (&args.durable, self.last) {
            // The commit of the last record printed may have been lost with
            // the connection.
            commit(client, name, seq).await?;
        }
        let mut stream = client
            .exchange()
            .subscribe(req)
            .await
            .map_err(stream_error)?
            .into_inner();
        self.opened = true;
        while args.limit.is_none_or(|l| self.printed < l) {
            let Some(rec) = stream.message().await.map_err(stream_error)? else {
                if args.follow {
                    return Err(CliError::of(
                        ExitClass::Connection,
                        "the broker ended the stream",
                    ));
                }
                return Ok(());
            };
            if self.last.is_some_and(|last| rec.seq <= last) {
                // Already printed before a reconnection.
                continue;
            }
            let json = client.render(&rec);
            print_json(&json)?;
            self.printed += 1;
            self.last = Some(rec.seq);
            if let Some(why) = &json.verify_error {
                if args.follow {
                    eprintln!("certex: record {} did NOT verify: {why}", rec.seq);
                }
                self.failed += 1;
                if self.reasons.len() < NAMED_FAILURES {
                    self.reasons.push(format!("record {}: {why}", rec.seq));
                }
            }
            if let Some(name) = &args.durable {
                commit(client, name, rec.seq).await?;
            }
        }
        Ok(())
    }

    /// Success, or a verification failure naming the records that did not
    /// verify.
    fn outcome(&self) -> Result<(), CliError> {
        if self.failed == 0 {
            return Ok(());
        }
        let more = if self.failed as usize > self.reasons.len() {
            "; …"
        } else {
            ""
        };
        Err(CliError::verification(format!(
            "{} record(s) did NOT verify: {}{more}",
            self.failed,
            self.reasons.join("; ")
        )))
    }
}

/// Moves the durable cursor `name` to `seq`.
async fn commit(client: &Client, name: &str, seq: u64) -> Result<(), CliError> {
    client
        .exchange()
        .commit_cursor(pb::CommitCursorRequest {
            durable: name.to_owned(),
            seq,
        })
        .await
        .map_err(ClientError::from)?;
    Ok(())
}

/// Exponential backoff with full jitter: each wait is drawn between half
/// and all of a ceiling that doubles from `first` up to `max`, so clients
/// that lost the same broker do not come back in step.
struct Backoff {
    first: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            ceiling: first,
        }
    }

    /// Starts again from the first wait (after a connection that worked).
    fn reset(&mut self) {
        self.ceiling = self.first;
    }

    /// The next wait.
    fn next(&mut self) -> Duration {
        use rand_core::RngCore;
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let half = ceiling / 2;
        let jitter = u64::from(rand_core::OsRng.next_u32()) % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(FIRST_WAIT, MAX_WAIT);
        let mut ceiling = FIRST_WAIT;
        for _ in 0..12 {
            let w = b.next();
            assert!(
                w >= ceiling / 2 && w <= ceiling,
                "{w:?} outside {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_WAIT);
        }
        assert_eq!(b.ceiling, MAX_WAIT);
        b.reset();
        assert!(b.next() <= FIRST_WAIT);
    }

    #[test]
    fn a_feed_resumes_after_the_last_seq_printed() {
        let req = pb::SubscribeRequest {
            start: Some(Start::Durable("soc".into())),
            filter: None,
            follow: true,
        };
        let mut feed = Feed::default();
        assert_eq!(feed.resume(&req).start, req.start);
        feed.last = Some(41);
        assert_eq!(feed.resume(&req).start, Some(Start::AfterSeq(41)));
    }

    #[test]
    fn a_record_that_fails_verification_fails_the_command() {
        let mut feed = Feed::default();
        assert!(feed.outcome().is_ok());
        feed.failed = 12;
        feed.reasons = (1..=NAMED_FAILURES)
            .map(|i| format!("record {i}: bad"))
            .collect();
        let e = feed.outcome().unwrap_err();
        assert_eq!(e.class.code(), 5);
        assert!(e.message.starts_with("12 record(s) did NOT verify"));
        assert!(e.message.ends_with("; …"));
    }
}

//! A certex client: mTLS connection to a broker, signing and publishing,
//! reading records and verifying their signatures against a local copy of
//! the directory (never trusting the broker for keys), and reading cases
//! whole by following their pages. Used by the CLI, the demo, the
//! benchmarks and the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use time::OffsetDateTime;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::client::draft::{BodyJson, OriginJson, RecordJson, RelayJson, TombstoneJson};
use crate::proto::directory_client::DirectoryClient;
use crate::proto::exchange_client::ExchangeClient;
use crate::proto::transparency_client::TransparencyClient;
use crate::proto::{self as pb};
use crate::rules::access::TrafficScope;
use crate::rules::canonical::decode_canonical;
use crate::rules::directory::{Directory, KeyStatus};
use crate::rules::envelope;
use crate::rules::time::timestamp_text;
use crate::rules::validate::Kind;
use crate::rules::vocab::Word;

/// The broker's answer to one envelope of a [`Client::publish_stream`].
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The envelope's 0-based position in the stream.
    pub index: u64,
    /// Its receipt, or the status a unary publish would have been refused
    /// with.
    pub outcome: Result<pb::Receipt, tonic::Status>,
}

/// What [`Client::publish_stream`] yields: outcomes in order, or the status
/// that ended the stream.
pub type OutcomeStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<StreamOutcome, ClientError>> + Send>>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Local files (keys, certificates, directory, draft) are unusable.
    #[error("{0}")]
    Local(String),
    /// The broker cannot be reached, or the TLS handshake failed; the
    /// message says which in words an operator can act on
    /// ([`connect_failure`]).
    #[error("{message}")]
    Connect { url: String, message: String },
    /// The broker's answer failed a check the client makes itself (a
    /// signature, a proof, the log's consistency with what was seen before).
    #[error("{0}")]
    Check(String),
    /// The broker refused the call, or (see [`transport_failure`]) the
    /// connection failed under it.
    #[error("{}", status_text(.0))]
    Status(#[from] tonic::Status),
}

fn status_text(s: &tonic::Status) -> String {
    match transport_failure(s) {
        Some(why) => format!("connection lost ({why})"),
        None => format!("broker refused: {} ({:?})", s.message(), s.code()),
    }
}

/// When a call failed because of the connection under it (the broker went
/// away, a reset, a TLS alert) rather than by a status the broker sent, the
/// chain of causes; `None` for the broker's own answer.
pub fn transport_failure(s: &tonic::Status) -> Option<String> {
    let chain = causes(std::error::Error::source(s)?);
    let lower = chain.to_lowercase();
    let closed = [
        "close_notify",
        "unexpectedeof",
        "connection closed",
        "connection reset",
        "broken pipe",
    ];
    if !lower.contains("alert") && closed.iter().any(|c| lower.contains(c)) {
        return Some(format!(
            "the broker closed the connection: {}",
            chain.split(": ").next().unwrap_or_default()
        ));
    }
    Some(chain)
}

/// An error and its causes in one line, each once.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        // tonic's "transport error" says nothing its causes do not.
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Why connecting to the broker at `url` failed, in words an operator can
/// act on: unreachable (refused, timed out, unknown host), a broker
/// certificate the CA in `ca` did not sign, this team's certificate
/// refused by the broker (a TLS alert), or the causes as they are.
pub fn connect_failure(url: &str, ca: Option<&Path>, why: &str) -> String {
    let lower = why.to_lowercase();
    let ca = ca.map_or_else(|| "the CA file".to_owned(), |p| p.display().to_string());
    if lower.contains("connection refused") {
        format!("cannot reach the broker at {url}: connection refused")
    } else if lower.contains("timed out") || lower.contains("timeout") {
        format!("cannot reach the broker at {url}: timed out")
    } else if lower.contains("lookup") || lower.contains("name or service not known") {
        format!("cannot reach the broker at {url}: unknown host ({why})")
    } else if lower.contains("unknownissuer") || lower.contains("badsignature") {
        format!("the broker's certificate is not signed by the CA in {ca} (wrong --ca?): {why}")
    } else if lower.contains("notvalidforname") {
        format!("the broker's certificate does not name the host of {url} ({why})")
    } else if lower.contains("invalid peer certificate") {
        format!("the broker's certificate is not acceptable ({why})")
    } else if lower.contains("alert") {
        format!("the broker refused this team's certificate ({why})")
    } else {
        format!("cannot reach the broker at {url}: {why}")
    }
}

/// Where a team's client files are.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// CA certificate that issued the broker's certificate.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Ed25519 signing key; needed only to publish.
    pub signing_key: PathBuf,
    /// Directory file used to verify signatures.
    pub directory: PathBuf,
}

/// In a development federation PKI (its directory lists brokers), the home
/// broker of `team`; `None` for a single-broker PKI or when the directory
/// cannot be read (the file is parsed loosely, only for this).
pub fn home_in_pki(pki: &Path, team: &str) -> Option<String> {
    let text = std::fs::read_to_string(pki.join("directory.toml")).ok()?;
    let file: toml::Table = toml::from_str(&text).ok()?;
    if file.get("broker")?.as_array()?.is_empty() {
        return None;
    }
    file.get("team")?
        .as_array()?
        .iter()
        .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(team))?
        .get("home")?
        .as_str()
        .map(str::to_owned)
}

/// The folder of a development PKI that holds what `team` trusts of its
/// broker (`ca.pem`, `signing.pub`): `brokers/<HOME>` in a federation PKI,
/// `broker` otherwise.
pub fn broker_files_in_pki(pki: &Path, team: &str) -> PathBuf {
    match home_in_pki(pki, team) {
        Some(home) if pki.join("brokers").join(&home).is_dir() => pki.join("brokers").join(home),
        _ => pki.join("broker"),
    }
}

impl ClientFiles {
    /// The development PKI layout of SPEC §10; in a federation PKI the CA
    /// trusted is the team's home broker's (`brokers/<HOME>/ca.pem`).
    pub fn from_pki(pki: &Path, team: &str) -> Self {
        let t = pki.join("teams").join(team);
        ClientFiles {
            ca: broker_files_in_pki(pki, team).join("ca.pem"),
            cert: t.join("cert.pem"),
            key: t.join("key.pem"),
            signing_key: t.join("signing.key"),
            directory: pki.join("directory.toml"),
        }
    }
}

fn read(p: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(p)
        .map_err(|e| ClientError::Local(format!("cannot read {what} {}: {e}", p.display())))
}

/// A `Get` request for a record named by seq (all digits) or by id,
/// optionally of one sender, in the given traffic.
pub fn record_request(what: &str, sender: Option<String>, scope: &TrafficScope) -> pb::GetRequest {
    pb::GetRequest {
        selector: Some(match what.parse::<u64>() {
            Ok(seq) => pb::get_request::Selector::Seq(seq),
            Err(_) => pb::get_request::Selector::Id(what.to_owned()),
        }),
        sender: sender.unwrap_or_default(),
        exercise: Some(scope.to_selector()),
    }
}

/// A connection to a broker as one team.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    team: String,
    signer: Option<SigningKey>,
    directory: Option<Directory>,
}

/// The mTLS endpoint for `url` (`https://host:port`) with the given PEM
/// files, not yet connected: [`connect_channel`] connects it; callers that
/// need their own transport underneath (the abuse suite watches its TCP
/// connections) use `Endpoint::connect_with_connector`.
pub fn tls_endpoint(
    url: &str,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Endpoint, ClientError> {
    if !url.starts_with("https://") {
        return Err(ClientError::Connect {
            url: url.into(),
            message: format!(
                "the broker URL {url:?} must start with https://: certex speaks only mutual TLS"
            ),
        });
    }
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([':', '/']).next())
        .unwrap_or("localhost")
        .to_owned();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(host);
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Connect {
            url: url.into(),
            message: e.to_string(),
        })?
        .tls_config(tls)
        .map_err(|e| ClientError::Connect {
            url: url.into(),
            message: e.to_string(),
        })
        .map(|e| {
            // HTTP/2 pings find a dead connection (a broker gone without
            // closing, a NAT that forgot the flow) in at most 40 s, even on
            // a quiet subscription. The broker pings at the same pace and
            // does not limit how often a client pings.
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
        })
}

/// How long a TCP connect and TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: a ping after this long without a frame from the broker…
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …which must be answered within this long, or the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens an mTLS channel to `url` (`https://host:port`) with the given PEM
/// files, without any team-specific state.
pub async fn connect_channel(
    url: &str,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Channel, ClientError> {
    let endpoint = tls_endpoint(url, ca, cert, key)?;
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        url: url.into(),
        message: connect_failure(url, None, &causes(&e)),
    })
}

impl Client {
    /// Connects as `team`. The signing key and directory are loaded when
    /// their files exist (publishing and verification need them).
    pub async fn connect(url: &str, files: &ClientFiles, team: &str) -> Result<Self, ClientError> {
        let channel = connect_channel(
            url,
            &read(&files.ca, "broker CA certificate")?,
            &read(&files.cert, "team certificate")?,
            &read(&files.key, "team TLS key")?,
        )
        .await
        .map_err(|e| match e {
            ClientError::Connect { url, message } if message.contains("the CA file") => {
                ClientError::Connect {
                    message: message.replace("the CA file", &files.ca.display().to_string()),
                    url,
                }
            }
            e => e,
        })?;
        let signer = if files.signing_key.exists() {
            Some(envelope::read_signing_key(&files.signing_key).map_err(ClientError::Local)?)
        } else {
            None
        };
        let directory = if files.directory.exists() {
            Some(Directory::load(&files.directory).map_err(|e| ClientError::Local(e.to_string()))?)
        } else {
            None
        };
        Ok(Client {
            channel,
            team: team.to_owned(),
            signer,
            directory,
        })
    }

    pub fn team(&self) -> &str {
        &self.team
    }

    /// Asks the broker who this connection is (`WhoAmI`). In TLS 1.3 the
    /// broker judges the client certificate after the client has finished
    /// its handshake, so a refused certificate shows only here, as the
    /// connection closing under the first call: reported as such.
    pub async fn check_accepted(&self, url: &str) -> Result<String, ClientError> {
        match self.directory_api().who_am_i(pb::WhoAmIRequest {}).await {
            Ok(r) => Ok(r.into_inner().id),
            Err(s) => match transport_failure(&s) {
                Some(why) if why.to_lowercase().contains("alert") => Err(ClientError::Connect {
                    url: url.into(),
                    message: format!("the broker refused this team's certificate ({why})"),
                }),
                Some(why) => Err(ClientError::Connect {
                    url: url.into(),
                    message: format!(
                        "the broker closed the connection after the TLS handshake: it refused this team's certificate, or is stopping ({why})"
                    ),
                }),
                None => Err(s.into()),
            },
        }
    }

    pub fn exchange(&self) -> ExchangeClient<Channel> {
        ExchangeClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// The underlying channel, for calls the typed clients do not cover.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn transparency(&self) -> TransparencyClient<Channel> {
        TransparencyClient::new(self.channel.clone())
    }

    pub fn cases(&self) -> crate::proto::cases_client::CasesClient<Channel> {
        crate::proto::cases_client::CasesClient::new(self.channel.clone())
    }

    pub fn directory_api(&self) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel.clone())
    }

    /// The local directory used for verification.
    pub fn local_directory(&self) -> Option<&Directory> {
        self.directory.as_ref()
    }

    fn signer(&self) -> Result<&SigningKey, ClientError> {
        self.signer
            .as_ref()
            .ok_or_else(|| ClientError::Local(format!("no signing key for {}", self.team)))
    }

    /// The broker's consistency proof between two tree sizes, as hashes for
    /// [`crate::client::verify::check_extends`].
    pub async fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<Vec<crate::client::verify::Hash>, ClientError> {
        let proof = self
            .transparency()
            .get_consistency_proof(pb::ConsistencyProofRequest { first, second })
            .await?
            .into_inner();
        proof
            .path
            .iter()
            .map(|h| crate::client::verify::hash_from_slice(h))
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Local(format!("consistency proof: {e}")))
    }

    /// Signs an encoded body.
    pub fn seal(&self, body: &pb::Body) -> Result<pb::Envelope, ClientError> {
        Ok(envelope::seal_body(body, self.signer()?))
    }

    /// Publishes a signed envelope.
    pub async fn publish(&self, envelope: pb::Envelope) -> Result<pb::Receipt, ClientError> {
        Ok(self
            .exchange()
            .publish(pb::PublishRequest {
                envelope: Some(envelope),
            })
            .await?
            .into_inner())
    }

    /// Publishes `envelopes` on one `PublishStream`: many in flight, the
    /// broker reading as fast as its window allows. Yields one
    /// [`StreamOutcome`] per envelope, in order, each once its record is
    /// durable (or refused); then ends, or yields the status that ended the
    /// stream early (e.g. UNAVAILABLE when the broker shuts down: envelopes
    /// without an outcome were not read and may be sent again).
    pub async fn publish_stream<S>(&self, envelopes: S) -> Result<OutcomeStream, ClientError>
    where
        S: futures_util::Stream<Item = pb::Envelope> + Send + 'static,
    {
        use futures_util::StreamExt;
        let requests = envelopes.map(|e| pb::PublishRequest { envelope: Some(e) });
        let receipts = self.exchange().publish_stream(requests).await?.into_inner();
        Ok(Box::pin(receipts.map(|r| {
            let r = r?;
            let outcome = match r.outcome {
                Some(pb::stream_receipt::Outcome::Receipt(receipt)) => Ok(receipt),
                Some(pb::stream_receipt::Outcome::Refused(why)) => Err(tonic::Status::new(
                    tonic::Code::from_i32(why.code),
                    why.message,
                )),
                None => {
                    return Err(ClientError::Check(format!(
                        "the broker's answer to envelope {} of the stream has no outcome",
                        r.index
                    )));
                }
            };
            Ok(StreamOutcome {
                index: r.index,
                outcome,
            })
        })))
    }

    /// Fills, signs and publishes a draft (SPEC §11).
    pub async fn submit(&self, mut draft: BodyJson) -> Result<pb::Receipt, ClientError> {
        draft
            .fill(&self.team, OffsetDateTime::now_utc())
            .map_err(ClientError::Local)?;
        let body = draft.to_body().map_err(ClientError::Local)?;
        self.publish(self.seal(&body)?).await
    }

    /// Fetches one record.
    pub async fn get(&self, req: pb::GetRequest) -> Result<pb::Record, ClientError> {
        Ok(self.exchange().get(req).await?.into_inner())
    }

    /// Every case `req` selects that the team may see, oldest first: follows
    /// `ListCases` pages until the last, starting at `req.page_token` (empty:
    /// from the first case), with `req.page_size` cases a page.
    pub async fn list_cases(
        &self,
        mut req: pb::ListCasesRequest,
    ) -> Result<Vec<pb::CaseSummary>, ClientError> {
        let mut cases: Vec<pb::CaseSummary> = Vec::new();
        loop {
            let page = self.cases().list_cases(req.clone()).await?.into_inner();
            let last = cases.last().map_or(0, |c| c.seq);
            check_page(
                "ListCases",
                &req.page_token,
                &page.next_page_token,
                last,
                page.cases.iter().map(|c| c.seq),
            )?;
            cases.extend(page.cases);
            if page.next_page_token.is_empty() {
                return Ok(cases);
            }
            req.page_token = page.next_page_token;
        }
    }

    /// One case with its whole history: follows `GetCase` pages of updates
    /// until the last, starting at `req.page_token`. The summary and derived
    /// state are those of the last page, the freshest.
    pub async fn get_case(&self, mut req: pb::GetCaseRequest) -> Result<pb::Case, ClientError> {
        let mut history = Vec::new();
        let mut updates: Vec<pb::Record> = Vec::new();
        loop {
            let mut page = self.cases().get_case(req.clone()).await?.into_inner();
            let last = updates.last().map_or(0, |u| u.seq);
            check_page(
                "GetCase",
                &req.page_token,
                &page.next_page_token,
                last,
                page.updates.iter().map(|u| u.seq),
            )?;
            history.append(&mut page.history);
            updates.append(&mut page.updates);
            if page.next_page_token.is_empty() {
                page.history = history;
                page.updates = updates;
                return Ok(page);
            }
            req.page_token = std::mem::take(&mut page.next_page_token);
        }
    }

    /// Fetches the assistance request `case_id` (real or exercise traffic),
    /// of `requester` when given; without it the id must name one case the
    /// team may read. Asks `Cases.GetCase`, which counts requests only, so a
    /// record of another kind under the same id cannot get in the way.
    pub async fn case_request(
        &self,
        case_id: &str,
        requester: Option<&str>,
    ) -> Result<pb::Body, ClientError> {
        for scope in [TrafficScope::Real, TrafficScope::AllExercises] {
            let req = pb::GetCaseRequest {
                id: case_id.to_owned(),
                exercise: Some(scope.to_selector()),
                requester: requester.unwrap_or_default().to_owned(),
                // Only the request is wanted; it comes on every page.
                page_size: 1,
                page_token: String::new(),
            };
            match self.cases().get_case(req).await {
                Ok(case) => {
                    let env = case
                        .into_inner()
                        .request
                        .and_then(|r| r.envelope)
                        .ok_or_else(|| {
                            ClientError::Local(format!(
                                "assistance request {case_id} was retracted"
                            ))
                        })?;
                    return envelope::decode_body(&env).map_err(|e| {
                        ClientError::Local(format!("request {case_id} does not decode: {e}"))
                    });
                }
                Err(s) if s.code() == tonic::Code::NotFound => continue,
                Err(s) => return Err(s.into()),
            }
        }
        Err(ClientError::Local(format!(
            "no assistance request {case_id} visible to {}",
            self.team
        )))
    }

    /// Signs and publishes a case update; TLP, audience and exercise are
    /// taken from the request (SPEC §5).
    pub async fn update_case(
        &self,
        case_id: &str,
        transition: pb::CaseState,
        note: &str,
        reason: &str,
    ) -> Result<pb::Receipt, ClientError> {
        self.update_case_of(None, case_id, transition, note, reason)
            .await
    }

    /// [`Client::update_case`] for the case `(requester, case_id)`.
    pub async fn update_case_of(
        &self,
        requester: Option<&str>,
        case_id: &str,
        transition: pb::CaseState,
        note: &str,
        reason: &str,
    ) -> Result<pb::Receipt, ClientError> {
        let request = self.case_request(case_id, requester).await?;
        let body = pb::Body {
            id: uuid::Uuid::new_v4().to_string(),
            sender: self.team.clone(),
            created_at: Some(crate::rules::time::to_timestamp(OffsetDateTime::now_utc())),
            tlp: request.tlp,
            audience: request.audience,
            exercise: request.exercise,
            references: vec![pb::Reference {
                sender: request.sender.clone(),
                id: case_id.to_owned(),
            }],
            content: Some(pb::body::Content::CaseUpdate(pb::CaseUpdate {
                case_id: case_id.to_owned(),
                requester: request.sender.clone(),
                transition: transition as i32,
                note: note.to_owned(),
                reason: reason.to_owned(),
            })),
        };
        self.publish(self.seal(&body)?).await
    }

    /// Renders a record as JSON, verifying its signature and leaf hash
    /// against the local directory.
    pub fn render(&self, rec: &pb::Record) -> RecordJson {
        render_record(rec, self.directory.as_ref())
    }
}

/// Checks that a page moves forward: its items come after those of the
/// previous pages (`last`, 0 before the first), in seq order, and its token
/// is not the one that asked for it, so following pages always ends.
fn check_page(
    call: &str,
    asked: &str,
    next: &str,
    mut last: u64,
    seqs: impl Iterator<Item = u64>,
) -> Result<(), ClientError> {
    for seq in seqs {
        if seq <= last {
            return Err(ClientError::Check(format!(
                "{call}: the broker sent seq {seq} after seq {last}; pages must move forward"
            )));
        }
        last = seq;
    }
    if !next.is_empty() && next == asked {
        return Err(ClientError::Check(format!(
            "{call}: the broker answered a page token with the same token"
        )));
    }
    Ok(())
}

/// Checks a record end to end: leaf hash over the envelope bytes, a
/// canonical body, a signature by a key the local directory lists for the
/// sender, and that key valid when the broker logged the record (its receipt
/// time; a key revoked or a team retired since still verifies what was logged
/// before). Returns the body and what has happened to the key since.
pub fn verify_record(rec: &pb::Record, dir: &Directory) -> Result<(pb::Body, KeyStatus), String> {
    let env = rec.envelope.as_ref().ok_or("record carries no envelope")?;
    if crate::client::verify::leaf_hash(&envelope::log_bytes(env)).as_slice()
        != rec.leaf_hash.as_slice()
    {
        return Err("leaf hash does not match the envelope".into());
    }
    let body = decode_canonical(&env.body).map_err(|e| format!("body {e}"))?;
    let time = |t: &prost_types::Timestamp| {
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
        )
        .ok()
    };
    // The broker's receipt time, never the signer's own created_at: a
    // stolen key could backdate that.
    let logged_at = rec
        .received_at
        .as_ref()
        .and_then(time)
        .ok_or("record has no receipt time")?;
    let (key, status) = dir
        .key_for_record(
            &body.sender,
            &env.key_id,
            logged_at,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| {
            format!(
                "{e} (when the record was logged, {})",
                crate::rules::time::format_time(logged_at)
            )
        })?;
    envelope::verify(env, &key.public).map_err(|e| e.to_string())?;
    Ok((body, status))
}

/// The §11 JSON form of a record.
pub fn render_record(rec: &pb::Record, dir: Option<&Directory>) -> RecordJson {
    let received_at = rec
        .received_at
        .as_ref()
        .map(timestamp_text)
        .unwrap_or_default();
    if let Some(t) = &rec.retracted {
        return RecordJson {
            seq: rec.seq,
            id: t.id.clone(),
            sender: t.sender.clone(),
            kind: None,
            tlp: None,
            exercise: String::new(),
            marking: None,
            received_at,
            leaf_hash: hex::encode(&rec.leaf_hash),
            verified: false,
            key_status: None,
            verify_error: None,
            body: None,
            retracted: Some(TombstoneJson {
                id: t.id.clone(),
                seq: t.seq,
                retracted_by: t.retracted_by.clone(),
                reason: t.reason.clone(),
            }),
            relays: relays_json(rec),
            origin: origin_json(rec, dir),
        };
    }
    let verified = dir.map(|d| verify_record(rec, d));
    let body = rec
        .envelope
        .as_ref()
        .and_then(|e| envelope::decode_body(e).ok())
        .unwrap_or_default();
    let (key_status, verify_error) = match &verified {
        Some(Ok((_, status))) => (Some(status.word().to_owned()), None),
        Some(Err(why)) => (None, Some(why.clone())),
        None => (
            None,
            Some("no directory to verify against: give --directory or --pki".to_owned()),
        ),
    };
    RecordJson {
        seq: rec.seq,
        id: body.id.clone(),
        sender: body.sender.clone(),
        kind: Kind::of(&body).map(|k| k.word().to_owned()),
        tlp: pb::Tlp::try_from(body.tlp)
            .ok()
            .map(|t| t.word().to_owned()),
        exercise: body.exercise.clone(),
        marking: (!body.exercise.is_empty()).then(|| "EXERCISE".to_owned()),
        received_at,
        leaf_hash: hex::encode(&rec.leaf_hash),
        verified: matches!(verified, Some(Ok(_))),
        key_status,
        verify_error,
        body: Some(BodyJson::from_body(&body)),
        retracted: None,
        relays: relays_json(rec),
        origin: origin_json(rec, dir),
    }
}

fn relays_json(rec: &pb::Record) -> Vec<RelayJson> {
    rec.relays
        .iter()
        .map(|r| RelayJson {
            broker: r.broker.clone(),
            state: r.state.clone(),
            peer_seq: (r.peer_seq > 0).then_some(r.peer_seq),
            reason: r.reason.clone(),
        })
        .collect()
}

fn origin_json(rec: &pb::Record, dir: Option<&Directory>) -> Option<OriginJson> {
    let o = rec.origin.as_ref()?;
    let vkey = dir
        .and_then(|d| d.broker(&o.broker))
        .and_then(|b| b.checkpoint_vkey.as_ref());
    let checked = match (vkey, rec.envelope.as_ref()) {
        (None, _) => None,
        (Some(_), _) if o.proof.is_empty() => Some(Err(format!(
            "broker {} sent no proof that it logged the record",
            o.broker
        ))),
        (Some(_), None) => None,
        (Some(v), Some(env)) => Some(crate::client::verify::check_origin_proof(
            &o.proof,
            &envelope::log_bytes(env),
            o.seq,
            v,
        )),
    };
    Some(OriginJson {
        broker: o.broker.clone(),
        seq: o.seq,
        logged_at_origin: checked.as_ref().map(Result::is_ok),
        origin_checkpoint_size: checked.as_ref().and_then(|c| c.as_ref().ok().copied()),
        origin_proof_error: checked.and_then(Result::err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_pages_must_move_forward() {
        let ok = |asked, next, last, seqs: &[u64]| {
            check_page("ListCases", asked, next, last, seqs.iter().copied()).is_ok()
        };
        assert!(ok("", "c3", 0, &[1, 3]));
        assert!(ok("c3", "", 3, &[4]));
        assert!(ok("c3", "c3x", 3, &[]), "an empty page may still go on");
        assert!(!ok("c3", "c3", 3, &[]), "the same token again never ends");
        assert!(!ok("c3", "c5", 3, &[3, 5]), "an item of an earlier page");
        assert!(!ok("", "", 0, &[2, 2]), "an item twice");
        assert!(!ok("", "", 0, &[5, 4]), "out of order");
    }
}

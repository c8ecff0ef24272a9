//! The broker's shared state, below every service: the configuration, the
//! directory in force, the log, the per-team budgets, the recently committed
//! records and the signals that reach open streams (directory reloads,
//! shutdown). The read paths and the services take this, never the server.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::broker::admission::{Inflight, RefusalLog};
use crate::broker::config::BrokerConfig;
use crate::broker::limits::{DiskWatch, PublishBudgets, ScanSlots, StreamSlots};
use crate::broker::recent::RecentRecords;
use crate::broker::transport::{Peer, TeamVerifier};
use crate::broker::verifier::SignaturePool;
use crate::error::Error;
use crate::federation::relay::Federation;
use crate::log::writer::Log;
use crate::rules::directory::Directory;

/// What every call of a running broker shares.
pub struct State {
    pub config: BrokerConfig,
    /// Open subscriptions per team.
    pub slots: StreamSlots,
    /// What each team may publish (messages, bytes, retries).
    pub budgets: PublishBudgets,
    /// The free-disk watermark.
    pub disk: DiskWatch,
    pub recent: RecentRecords,
    /// Request bytes in flight, per team and in all.
    pub inflight: Arc<Inflight>,
    /// Refused calls, summed up per kind.
    pub refusals: Arc<RefusalLog>,
    /// Case scans in progress per team.
    pub scans: ScanSlots,
    /// Becomes `true` when the broker starts shutting down.
    pub closing: watch::Sender<bool>,
    /// Counts successful directory reloads.
    reloads: watch::Sender<u64>,
    directory: RwLock<Arc<Directory>>,
    /// The TLS client verifier, which follows directory reloads.
    pub verifier: Arc<TeamVerifier>,
    /// The checkpoint signer, when the broker has a checkpoint key.
    pub checkpoints: Option<crate::broker::checkpoint::Checkpoints>,
    /// This broker's peers, in a federation (SPEC §12).
    pub federation: Option<Arc<Federation>>,
    /// The threads that check envelope signatures (SPEC §4).
    pub signatures: SignaturePool,
    log: Log,
}

impl State {
    pub fn new(
        config: BrokerConfig,
        directory: Directory,
        verifier: Arc<TeamVerifier>,
        checkpoints: Option<crate::broker::checkpoint::Checkpoints>,
        federation: Option<Arc<Federation>>,
        signatures: SignaturePool,
        log: Log,
    ) -> Self {
        State {
            signatures,
            checkpoints,
            federation,
            slots: StreamSlots::new(
                config.limits.max_subscriptions_per_team,
                config.limits.max_subscriptions,
            ),
            budgets: PublishBudgets::new(&config.limits),
            disk: DiskWatch::new(config.limits.min_free_disk_bytes),
            recent: RecentRecords::new(config.limits.recent_cache_bytes),
            refusals: Default::default(),
            scans: Default::default(),
            inflight: Arc::new(Inflight::new(
                config.limits.max_inflight_bytes_per_team,
                config.limits.max_inflight_bytes,
            )),
            closing: watch::channel(false).0,
            reloads: watch::channel(0).0,
            config,
            directory: RwLock::new(Arc::new(directory)),
            verifier,
            log,
        }
    }

    /// The directory in force.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The durable size of the log: records above it are not yet on the
    /// device and no read path shows them.
    pub fn committed(&self) -> u64 {
        *self.log.committed().borrow()
    }

    /// Changes once per successful directory reload.
    pub fn directory_reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Re-reads the directory file. A bad file is refused and the directory
    /// in force stays; so is one that no longer lists this broker (when it
    /// has a federation id). Counted in the metrics by result.
    pub fn reload_directory(&self) -> Result<(), String> {
        let r = self.try_reload_directory();
        crate::broker::metrics::directory_reload(r.is_ok());
        r
    }

    fn try_reload_directory(&self) -> Result<(), String> {
        let dir = Directory::load(&self.config.directory).map_err(|e| e.to_string())?;
        self.config
            .check_directory(&dir)
            .map_err(|e| format!("directory {}: {e}", self.config.directory.display()))?;
        self.verifier.reload(&dir)?;
        let old = std::mem::replace(
            &mut *self.directory.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(dir),
        );
        self.reloads.send_modify(|n| *n += 1);
        let changes = crate::rules::directory::changes::changes(&old, &self.directory());
        // The audit trail of the directory: one line per change (team ids,
        // key ids, countries, group names; never key or certificate bytes).
        for change in &changes {
            tracing::info!(target: "certex::audit", change = %change, "directory change");
        }
        tracing::info!(
            path = %self.config.directory.display(),
            changes = changes.len(),
            "directory reloaded"
        );
        Ok(())
    }

    /// Whether the team of an authenticated connection is still a member:
    /// in the directory in force and not retired.
    pub fn member(&self, team: &str) -> Result<(), Error> {
        if self
            .directory()
            .is_member(team, time::OffsetDateTime::now_utc())
        {
            Ok(())
        } else {
            Err(Error::UnknownCaller(team.to_owned()))
        }
    }

    /// The team of an authenticated connection calling a team service
    /// (gRPC or TAXII): not over a connection limit, not a broker identity,
    /// a member of the directory in force, its certificate not withdrawn,
    /// and homed here.
    pub fn team_caller(&self, peer: &Peer) -> Result<String, Error> {
        if let Some(why) = peer.conn.refusal() {
            return Err(Error::Limit(why.to_owned()));
        }
        if let Some(broker) = &peer.broker {
            return Err(Error::BrokerCaller {
                broker: broker.clone(),
            });
        }
        self.member(&peer.team)?;
        if !peer.conn.is_valid() {
            return Err(Error::Withdrawn {
                team: peer.team.clone(),
            });
        }
        self.homed_here(&peer.team)?;
        Ok(peer.team.clone())
    }

    /// Whether `team` may use this broker: in a federation (this broker
    /// has an id and the directory lists brokers), only teams homed here.
    pub fn homed_here(&self, team: &str) -> Result<(), Error> {
        let Some(me) = self.config.broker.as_deref() else {
            return Ok(());
        };
        let dir = self.directory();
        match dir.home_of(team) {
            Some(home) if home != me => Err(Error::NotHomed {
                team: team.to_owned(),
                home: home.to_owned(),
                url: dir.broker(home).map(|b| b.url.clone()).unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }

    /// The broker id of an authenticated broker connection: the
    /// connection's certificate names a broker still listed in the directory
    /// in force, the connection was not withdrawn, and this broker is in a
    /// federation. This broker's own identity (its operator) passes too.
    pub fn broker_identity<T>(&self, req: &tonic::Request<T>) -> Result<String, Error> {
        let peer = req
            .extensions()
            .get::<Peer>()
            .ok_or_else(|| Error::Internal("call without an authenticated connection".into()))?;
        if let Some(why) = peer.conn.refusal() {
            return Err(Error::Limit(why.to_owned()));
        }
        let Some(id) = peer.broker.as_deref() else {
            return Err(Error::NotPeer(format!(
                "this connection is authenticated as team {}",
                peer.team
            )));
        };
        if self.directory().broker(id).is_none() {
            return Err(Error::UnknownBroker(id.to_owned()));
        }
        if !peer.conn.is_valid() {
            return Err(Error::Withdrawn {
                team: peer.team.clone(),
            });
        }
        match self.config.broker.as_deref() {
            None => Err(Error::NotPeer(
                "this broker has no federation id (serve --broker ID)".into(),
            )),
            Some(_) => Ok(id.to_owned()),
        }
    }

    /// [`State::broker_identity`] of another broker: a peer.
    pub fn broker_peer<T>(&self, req: &tonic::Request<T>) -> Result<String, Error> {
        let id = self.broker_identity(req)?;
        if self.config.broker.as_deref() == Some(id.as_str()) {
            return Err(Error::NotPeer(format!(
                "the connection is authenticated as broker {id}, which is this broker"
            )));
        }
        Ok(id)
    }
}

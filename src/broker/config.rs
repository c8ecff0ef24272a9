//! Typed broker configuration: from the development PKI layout (`--pki`,
//! `--data`, `--listen`) or from a TOML file (`--config`), validated at boot
//! with errors that name the key to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Limits of SPEC §4, with their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted envelope, in bytes.
    pub max_envelope_bytes: usize,
    /// Allowed distance of `created_at` from the broker clock, in seconds.
    pub clock_skew_secs: u64,
    /// Sustained publishes per second per team.
    pub rate_per_second: u32,
    /// Publishes a team may burst above the sustained rate.
    pub rate_burst: u32,
    /// Open connections the broker accepts at once.
    pub max_connections: usize,
    /// Open subscriptions per team; more are refused with RESOURCE_EXHAUSTED.
    pub max_subscriptions_per_team: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: 1024 * 1024,
            clock_skew_secs: 600,
            rate_per_second: 2000,
            rate_burst: 4000,
            max_connections: 4096,
            max_subscriptions_per_team: 32,
        }
    }
}

/// Everything `certex serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on, e.g. "0.0.0.0:7443".
    pub listen: SocketAddr,
    /// Directory for the sled database (created owner-only).
    pub data: PathBuf,
    /// The directory file (teams, anchors, keys, groups).
    pub directory: PathBuf,
    /// Broker TLS certificate chain (PEM).
    pub cert: PathBuf,
    /// Broker TLS private key (PEM).
    pub key: PathBuf,
    /// Ed25519 tree-head signing key (PKCS#8 PEM).
    pub tree_head_key: PathBuf,
    #[serde(default)]
    pub limits: Limits,
}

impl BrokerConfig {
    /// The configuration implied by a development PKI directory (SPEC §10).
    pub fn from_pki(pki: &Path, data: &Path, listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            data: data.to_owned(),
            directory: pki.join("directory.toml"),
            cert: pki.join("broker/cert.pem"),
            key: pki.join("broker/key.pem"),
            tree_head_key: pki.join("broker/signing.key"),
            limits: Limits::default(),
        }
    }

    /// Reads a TOML configuration file; relative paths are relative to it.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut c: BrokerConfig =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut c.data,
            &mut c.directory,
            &mut c.cert,
            &mut c.key,
            &mut c.tree_head_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        Ok(c)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.max_envelope_bytes < 1024 {
            return Err("limits.max_envelope_bytes must be at least 1024".into());
        }
        if l.rate_per_second == 0 || l.rate_burst == 0 {
            return Err("limits.rate_per_second and limits.rate_burst must be positive".into());
        }
        if l.max_connections == 0 || l.max_subscriptions_per_team == 0 {
            return Err(
                "limits.max_connections and limits.max_subscriptions_per_team must be positive"
                    .into(),
            );
        }
        Ok(())
    }
}

//! The free-disk watermark (SPEC §15): below it a new message is refused
//! `RESOURCE_EXHAUSTED` naming the disk while retries, reads, subscriptions
//! and proofs go on; and a broker on a device something else filled up
//! still starts (it gives back its space reserve) and serves reads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use certex::broker::config::Limits;
use certex::proto::{self as pb};
use common::*;

fn report(sender: &str, title: &str) -> pb::Body {
    body(
        sender,
        pb::Tlp::Green,
        teams(&["BR-CERTBR"]),
        incident(title),
    )
}

#[tokio::test]
async fn below_the_watermark_new_messages_are_refused_and_reads_go_on() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let env = cn
            .seal(&report("CN-CNCERT", &format!("before {i}")))
            .unwrap();
        cn.publish(env.clone()).await.unwrap();
        sent.push(env);
    }
    // The same broker data, restarted with a watermark no device can meet.
    let tmp = b.stop().await;
    let b = TestBroker::start_in(
        tmp,
        Limits {
            min_free_disk_bytes: u64::MAX / 2,
            ..Limits::default()
        },
    )
    .await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;

    let (status, message) = code(
        cn.publish(cn.seal(&report("CN-CNCERT", "after")).unwrap())
            .await,
    );
    assert_eq!(status, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("disk is nearly full"), "{message}");
    assert!(message.contains("min_free_disk_bytes"), "{message}");

    // A retry of a logged message writes nothing: it gets its receipt.
    let again = cn.publish(sent[1].clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, 2);

    // Reads, subscriptions and proofs go on.
    let got = br.exchange().get(get_seq(3)).await.unwrap().into_inner();
    assert!(got.envelope.is_some());
    assert_eq!(catch_up(&br).await.len(), 3);
    let head = br
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.tree_size, 3);

    // Moving a durable cursor writes: refused too.
    let err = br
        .exchange()
        .commit_cursor(pb::CommitCursorRequest {
            durable: "soc".into(),
            seq: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Needs a small device to fill: a tmpfs, which needs privileges. Where
/// `mount` is refused it says so and checks nothing (the watermark test
/// above runs everywhere).
#[tokio::test]
async fn a_broker_on_a_full_device_starts_and_serves_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&tmp.path().join("dev"), "64m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "SKIPPED a_broker_on_a_full_device_starts_and_serves_reads: cannot mount a 64 MiB tmpfs here ({why})"
            );
            return;
        }
    };
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let data = fs.0.join("data");
    let limits = Limits {
        min_free_disk_bytes: 24 * 1024 * 1024,
        ..Limits::default()
    };
    let broker = BrokerProcess::start_with(&pki, &data, &limits);
    assert!(data.join("reserve").exists(), "the space reserve is held");
    let files = |team: &str| certex::client::connection::ClientFiles::from_pki(&pki, team);
    let cn =
        certex::client::connection::Client::connect(&broker.url, &files("CN-CNCERT"), "CN-CNCERT")
            .await
            .unwrap();
    // Fill up to the watermark with 60 KB reports.
    let mut logged = 0u64;
    let refusal = loop {
        let mut b = report("CN-CNCERT", "filler");
        if let Some(pb::body::Content::Incident(r)) = &mut b.content {
            r.description = "x".repeat(60_000);
        }
        match cn.publish(cn.seal(&b).unwrap()).await {
            Ok(r) => logged = r.seq,
            Err(e) => break code::<()>(Err(e)),
        }
        assert!(logged < 2000, "the watermark never refused");
    };
    assert_eq!(refusal.0, tonic::Code::ResourceExhausted, "{}", refusal.1);
    assert!(refusal.1.contains("disk is nearly full"), "{}", refusal.1);
    assert!(logged > 10);
    drop(cn);

    // Something else fills the device to the last byte; the broker dies.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=200"])
        .arg(format!("of={}", fs.0.join("filler").display()))
        .output()
        .unwrap();
    let free = rustix_free(&fs.0);
    assert!(free < 1024 * 1024, "the device is full ({free} bytes free)");
    let mut broker = broker;
    broker.kill();

    // It starts again, serves every record, and refuses new ones.
    let broker = BrokerProcess::start_with(&pki, &data, &limits);
    let br =
        certex::client::connection::Client::connect(&broker.url, &files("BR-CERTBR"), "BR-CERTBR")
            .await
            .unwrap();
    let got = br
        .exchange()
        .get(get_seq(logged))
        .await
        .unwrap()
        .into_inner();
    assert!(got.envelope.is_some());
    assert_eq!(catch_up(&br).await.len() as u64, logged);
    let cn =
        certex::client::connection::Client::connect(&broker.url, &files("CN-CNCERT"), "CN-CNCERT")
            .await
            .unwrap();
    let (status, message) = code(
        cn.publish(cn.seal(&report("CN-CNCERT", "late")).unwrap())
            .await,
    );
    assert_eq!(status, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("disk is nearly full"), "{message}");
    drop(broker);
}

fn rustix_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

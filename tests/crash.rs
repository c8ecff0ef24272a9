//! Durability: a broker child process is killed with SIGKILL at a random
//! moment while several clients publish; after a restart every receipted
//! record is there with its seq and bytes, seqs are gap-free, and every tree
//! head seen before the crash is extended by the new one.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certex::client::connection::{Client, ClientFiles};
use certex::client::verify;
use certex::proto::{self as pb};
use common::*;

async fn client(pki: &Path, url: &str, team: &str) -> Client {
    Client::connect(url, &ClientFiles::from_pki(pki, team), team)
        .await
        .unwrap()
}

fn pseudo_random_ms(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    300 + (nanos ^ (round * 7919)) % 400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_receipted_record() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    make_pki(&pki);
    let log_key = certex::client::audit::read_public_key(&pki.join("broker/signing.pub")).unwrap();
    let publishers = ["CN-CNCERT", "RU-GOVCERT", "BR-CERTBR", "IN-CERTIN"];
    let mut receipted: Vec<(pb::Receipt, pb::Envelope)> = Vec::new();
    let mut heads: Vec<pb::SignedTreeHead> = Vec::new();

    for round in 0..3u64 {
        let mut broker = BrokerProcess::start(&pki, &data);
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen_heads = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for team in publishers {
            let c = client(&pki, &broker.url, team).await;
            let got = got.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let env = c
                        .seal(&body(
                            team,
                            pb::Tlp::Green,
                            community(),
                            incident("crash test"),
                        ))
                        .unwrap();
                    match c.publish(env.clone()).await {
                        Ok(r) => got.lock().unwrap().push((r, env)),
                        Err(_) => break,
                    }
                }
            }));
        }
        let watcher = client(&pki, &broker.url, "US-CISA").await;
        let seen = seen_heads.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(h) = watcher.transparency().get_head(pb::GetHeadRequest {}).await {
                seen.lock().unwrap().push(h.into_inner());
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(pseudo_random_ms(round))).await;
        broker.kill();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        let new: Vec<_> = std::mem::take(&mut *got.lock().unwrap());
        assert!(
            !new.is_empty(),
            "round {round}: nothing was published before the kill"
        );
        receipted.extend(new);
        heads.extend(std::mem::take(&mut *seen_heads.lock().unwrap()));

        // Restart on the same data and check everything receipted so far.
        let broker = BrokerProcess::start(&pki, &data);
        let reader = client(&pki, &broker.url, "US-CISA").await;
        // The head is fetched and its signature checked as `certex log head` does.
        let (head, root) = certex::client::audit::fetch_head(&reader, &log_key)
            .await
            .unwrap();
        let max = receipted.iter().map(|(r, _)| r.seq).max().unwrap();
        assert!(
            head.tree_size >= max,
            "round {round}: log has {} records, receipts go to {max}",
            head.tree_size
        );
        for (r, env) in &receipted {
            let rec = reader.get(get_seq(r.seq)).await.unwrap();
            assert_eq!(rec.envelope.as_ref(), Some(env), "record {} changed", r.seq);
            assert_eq!(rec.leaf_hash, r.leaf_hash);
        }
        for seq in 1..=head.tree_size {
            let rec = reader.get(get_seq(seq)).await.unwrap();
            assert_eq!(rec.seq, seq, "gap at {seq}");
        }
        for old in &heads {
            let old_root = verify::hash_from_slice(&old.root_hash).unwrap();
            verify::verify_tree_head(
                &log_key,
                old.tree_size,
                &old_root,
                old.timestamp_ms,
                &old.signature,
            )
            .unwrap();
            assert!(
                old.timestamp_ms <= head.timestamp_ms,
                "tree head time went backwards"
            );
            let path = reader
                .consistency_proof(old.tree_size, head.tree_size)
                .await
                .unwrap();
            verify::check_extends((old.tree_size, &old_root), (head.tree_size, &root), &path)
                .unwrap_or_else(|e| {
                    panic!("round {round}: head {} not extended: {e}", old.tree_size)
                });
        }
        drop(broker);
        eprintln!(
            "round {round}: {} receipts so far, log size {}",
            receipted.len(),
            head.tree_size
        );
    }
}

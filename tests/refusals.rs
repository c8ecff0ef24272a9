//! Refusals are visible and say nothing secret (SPEC §15): a refused call
//! is logged at INFO with team, call, status code, rule and field name —
//! never a field's value — and a flood of alike refusals is summed up in
//! one line per interval instead of one line each.

mod common;

use std::time::{Duration, Instant};

use certex::broker::config::Limits;
use certex::client::connection::{Client, ClientFiles};
use certex::proto as pb;
use common::*;
use tonic::Code;

/// A value no log line may ever carry.
const SECRET: &str = "XX-TOPSECRETVALUE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_by_name_never_by_value_and_floods_are_summed_up() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let broker = BrokerProcess::start_logging(
        &pki,
        &tmp.path().join("data"),
        &Limits {
            min_free_disk_bytes: 0,
            ..Limits::default()
        },
    );
    let cn = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "CN-CNCERT"),
        "CN-CNCERT",
    )
    .await
    .unwrap();
    // A TLP:RED report to a team that does not exist, whose name is the
    // secret: refused INVALID_ARGUMENT on audience.teams, 40 times.
    for _ in 0..40 {
        let b = body(
            "CN-CNCERT",
            pb::Tlp::Red,
            teams(&[SECRET]),
            incident(&format!("{SECRET} in the title")),
        );
        let (c, msg) = code(cn.publish(cn.seal(&b).unwrap()).await);
        assert_eq!(c, Code::InvalidArgument, "{msg}");
        assert!(msg.contains("audience.teams"), "{msg}");
    }
    // One line at once, naming team, call, code, rule and field.
    let first = wait_for(
        &broker,
        &["call refused", "audience.teams"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        first.len(),
        1,
        "one line for the first of a kind: {first:?}"
    );
    let line = &first[0];
    for word in ["CN-CNCERT", "Publish", "InvalidArgument", "invalid-field"] {
        assert!(line.contains(word), "{word} missing from {line:?}");
    }
    // The other 39 in one summing-up line when the interval ends.
    let summed = wait_for(
        &broker,
        &["further calls refused alike", "audience.teams"],
        Duration::from_secs(25),
    )
    .await;
    assert_eq!(summed.len(), 1, "{summed:?}");
    assert!(summed[0].contains("count=39"), "{:?}", summed[0]);
    // Not a single line carries the value.
    let leaked = broker.log_lines(&[SECRET]);
    assert!(leaked.is_empty(), "a value reached the log: {leaked:?}");
}

/// The log lines containing every one of `words`, once there is one.
async fn wait_for(broker: &BrokerProcess, words: &[&str], within: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = broker.log_lines(words);
        if !lines.is_empty() || start.elapsed() > within {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! What generic gRPC tools see: health and server reflection (v1 and
//! v1alpha), behind the same mTLS; and graceful shutdown on SIGTERM.

mod common;

use std::time::Duration;

use certex::client::connection::{Client, ClientFiles};
use certex::proto as pb;
use common::*;
use tokio_stream::StreamExt;

async fn raw_channel(b: &TestBroker, team: &str) -> tonic::transport::Channel {
    let f = ClientFiles::from_pki(&b.pki(), team);
    certex::client::connection::connect_channel(
        &b.url(),
        &std::fs::read(f.ca).unwrap(),
        &std::fs::read(f.cert).unwrap(),
        &std::fs::read(f.key).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let b = TestBroker::start().await;
    let mut health = HealthClient::new(raw_channel(&b, "CN-CNCERT").await);
    for service in [
        "",
        "certex.v1.Exchange",
        "certex.v1.Cases",
        "certex.v1.Transparency",
        "certex.v1.Directory",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e:?}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let b = TestBroker::start().await;
    let ch = raw_channel(&b, "CN-CNCERT").await;
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection response");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "certex.v1.Exchange",
            "certex.v1.Cases",
            "certex.v1.Directory",
            "certex.v1.Transparency",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "certex.v1.Exchange".into(),
            )),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(fd)) = resp.message_response else {
            panic!("unexpected reflection response");
        };
        assert!(!fd.file_descriptor_proto.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_with_open_subscriptions() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    make_pki(&pki);
    let mut broker = BrokerProcess::start(&pki, &data);
    let c = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "BR-CERTBR"),
        "BR-CERTBR",
    )
    .await
    .unwrap();
    let mut live = c
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::Tail(true)),
            filter: None,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The open subscription ends with UNAVAILABLE instead of hanging.
    let end = tokio::time::timeout(Duration::from_secs(20), live.message())
        .await
        .expect("stream ended");
    match end {
        Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        Ok(None) => {}
        Ok(Some(r)) => panic!("unexpected record {r:?}"),
    }
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = broker.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.expect("broker exited after SIGTERM");
    assert!(status.success(), "{status:?}");
}

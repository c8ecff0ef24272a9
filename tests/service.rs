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

/// A question to server reflection.
#[derive(Debug)]
enum Question {
    Symbol(String),
    File(String),
}

/// A reflection stream driven as grpcurl drives one: a question, its answer,
/// the next question.
trait Session: Sized {
    async fn open(ch: tonic::transport::Channel) -> Self;
    /// The encoded files of the answer, or the error's code and message.
    async fn ask(&mut self, q: &Question) -> Result<Vec<Vec<u8>>, (i32, String)>;
}

/// One [`Session`] per protocol version, whose messages are the same.
macro_rules! reflection_session {
    ($version:ident) => {
        mod $version {
            use tokio::sync::mpsc;
            use tokio_stream::wrappers::ReceiverStream;
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, ServerReflectionResponse,
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };

            use super::Question;

            pub struct Session {
                tx: mpsc::Sender<ServerReflectionRequest>,
                rx: tonic::Streaming<ServerReflectionResponse>,
            }

            impl super::Session for Session {
                async fn open(ch: tonic::transport::Channel) -> Self {
                    let (tx, requests) = mpsc::channel(1);
                    let rx = ServerReflectionClient::new(ch)
                        .server_reflection_info(ReceiverStream::new(requests))
                        .await
                        .unwrap()
                        .into_inner();
                    Session { tx, rx }
                }

                async fn ask(&mut self, q: &Question) -> Result<Vec<Vec<u8>>, (i32, String)> {
                    let message_request = match q {
                        Question::Symbol(s) => MessageRequest::FileContainingSymbol(s.clone()),
                        Question::File(f) => MessageRequest::FileByFilename(f.clone()),
                    };
                    let request = ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(message_request),
                    };
                    self.tx.send(request).await.unwrap();
                    let answer = self.rx.message().await.unwrap().expect("an answer");
                    match answer.message_response {
                        Some(MessageResponse::FileDescriptorResponse(r)) => {
                            Ok(r.file_descriptor_proto)
                        }
                        Some(MessageResponse::ErrorResponse(e)) => {
                            Err((e.error_code, e.error_message))
                        }
                        other => panic!("{q:?}: unexpected answer {other:?}"),
                    }
                }
            }
        }
    };
}
reflection_session!(v1);
reflection_session!(v1alpha);

fn decode_files(encoded: Vec<Vec<u8>>) -> Vec<prost_types::FileDescriptorProto> {
    use prost::Message;
    encoded
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .collect()
}

/// Files gathered as grpcurl gathers them: the answer to `first`, then each
/// import not yet held, asked by file name on the same stream, until nothing
/// is missing. Returns the files and how many by-name questions it took.
async fn gather(
    s: &mut impl Session,
    first: Question,
) -> (Vec<prost_types::FileDescriptorProto>, usize) {
    let mut files = std::collections::BTreeMap::new();
    let mut asked = 0;
    let mut next = Some(first);
    while let Some(q) = next.take() {
        let answer = s.ask(&q).await.unwrap_or_else(|e| panic!("{q:?}: {e:?}"));
        assert!(!answer.is_empty(), "{q:?}: no file");
        for f in decode_files(answer) {
            files.insert(f.name().to_owned(), f);
        }
        let missing = files
            .values()
            .flat_map(|f| &f.dependency)
            .find(|d| !files.contains_key(*d));
        if let Some(d) = missing {
            next = Some(Question::File(d.clone()));
            asked += 1;
        }
    }
    (files.into_values().collect(), asked)
}

/// The files build a descriptor pool (every import present, every type
/// referenced defined), or why not.
fn build(
    files: Vec<prost_types::FileDescriptorProto>,
) -> Result<prost_reflect::DescriptorPool, String> {
    let names: Vec<String> = files.iter().map(|f| f.name().to_owned()).collect();
    prost_reflect::DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
        file: files,
    })
    .map_err(|e| format!("files {names:?} do not build: {e}"))
}

/// `service` and its methods' messages resolve in the files.
fn check_complete(files: Vec<prost_types::FileDescriptorProto>, service: &str) {
    let pool = build(files).unwrap_or_else(|e| panic!("{service}: {e}"));
    let s = pool
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("{service} is not in its files"));
    assert!(s.methods().len() > 0, "{service}");
    for m in s.methods() {
        for message in [m.input(), m.output()] {
            assert!(
                pool.get_message_by_name(message.full_name()).is_some(),
                "{}: {}",
                m.full_name(),
                message.full_name()
            );
        }
    }
}

/// For one protocol version: each certex service resolves from the answer to
/// `file_containing_symbol` alone (following imports by name would find
/// nothing missing); every file met is served by `file_by_filename`, first,
/// with its imports; an unknown symbol is a NOT_FOUND answer that leaves the
/// stream open.
async fn check_reflection<S: Session>(version: &str, ch: &tonic::transport::Channel) {
    let mut every_file = std::collections::BTreeSet::new();
    for service in [
        "certex.v1.Exchange",
        "certex.v1.Cases",
        "certex.v1.Directory",
        "certex.v1.Transparency",
    ] {
        let mut s = S::open(ch.clone()).await;
        let (files, by_name) = gather(&mut s, Question::Symbol(service.into())).await;
        every_file.extend(files.iter().map(|f| f.name().to_owned()));
        check_complete(files, service);
        assert_eq!(
            by_name, 0,
            "{version} {service}: the first answer lacks imports"
        );
    }
    assert!(
        every_file.contains("google/protobuf/timestamp.proto"),
        "{every_file:?}"
    );
    for name in &every_file {
        let mut s = S::open(ch.clone()).await;
        let files = decode_files(s.ask(&Question::File(name.clone())).await.unwrap());
        assert_eq!(
            files[0].name(),
            name,
            "{version}: the file asked for comes first"
        );
        build(files).unwrap_or_else(|e| panic!("{version} {name}: {e}"));
    }
    let mut s = S::open(ch.clone()).await;
    let (code, message) = s
        .ask(&Question::Symbol("certex.v1.NoSuchService".into()))
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::NotFound as i32, "{version}: {message}");
    assert!(message.contains("certex.v1.NoSuchService"), "{message}");
    let after = s.ask(&Question::Symbol("certex.v1.Exchange".into())).await;
    assert!(
        after.is_ok(),
        "{version}: the stream goes on after an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_resolves_services_with_all_their_imports() {
    let b = TestBroker::start().await;
    let ch = raw_channel(&b, "CN-CNCERT").await;
    check_reflection::<v1::Session>("v1", &ch).await;
    check_reflection::<v1alpha::Session>("v1alpha", &ch).await;
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
        Err(s) if s.code() == tonic::Code::Unavailable => {}
        // Known imperfection: the exiting process closes sockets that still
        // hold unread client bytes, so the kernel sends a reset, and a
        // client slow to read (a loaded machine: about 1 run in 40 here)
        // loses the UNAVAILABLE trailers with its receive buffer. The stream
        // still ends, which is what this test is about.
        Err(s)
            if s.code() == tonic::Code::Unknown && format!("{s:?}").contains("ConnectionReset")
                || format!("{s:?}").contains("close_notify") => {}
        Err(s) => panic!("the stream ended with {s:?}"),
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

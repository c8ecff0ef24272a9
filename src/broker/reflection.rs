//! gRPC server reflection (v1 and v1alpha) for generic tools such as grpcurl:
//! every answer that carries a file carries the files it imports too, down to
//! the well-known types, so a client that asks for a service by name can build
//! its descriptors from that one answer.
//!
//! tonic-reflection 0.14's server answers `file_containing_symbol` and
//! `file_by_filename` with the defining file alone and ends the stream on the
//! first unknown name. This service answers as the reference servers (Go,
//! C++) do: the requested file, then its transitive imports not yet sent on
//! the stream; an unknown name is an `error_response` and the stream goes on.
//! It uses tonic-reflection's generated protocol types and prost-reflect to
//! check, at start, that every import is present.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use prost_reflect::DescriptorPool;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::{v1, v1alpha};

/// One file as served: its encoded `FileDescriptorProto` and what it imports.
struct File {
    encoded: Vec<u8>,
    imports: Vec<String>,
}

/// What reflection knows, built once from the encoded descriptor sets.
struct Catalog {
    files: HashMap<String, File>,
    /// Fully-qualified symbol (message, field, oneof, enum, enum value,
    /// service, method, extension) → the file that defines it.
    symbols: HashMap<String, String>,
    /// (extended message, field number) → the file defining the extension.
    extensions: HashMap<(String, i32), String>,
    /// Message → the numbers of the extensions of it that are known.
    extension_numbers: BTreeMap<String, Vec<i32>>,
    services: Vec<String>,
}

impl Catalog {
    fn new(descriptor_sets: &[&[u8]]) -> Result<Self, String> {
        let mut pool = DescriptorPool::new();
        for set in descriptor_sets {
            pool.decode_file_descriptor_set(*set)
                .map_err(|e| format!("reflection: a descriptor set is unusable: {e}"))?;
        }
        let mut symbols = HashMap::new();
        let mut define = |name: &str, file: &str| {
            symbols.insert(name.to_owned(), file.to_owned());
        };
        for m in pool.all_messages() {
            let file = m.parent_file();
            define(m.full_name(), file.name());
            for f in m.fields() {
                define(f.full_name(), file.name());
            }
            for o in m.oneofs() {
                define(o.full_name(), file.name());
            }
        }
        for e in pool.all_enums() {
            define(e.full_name(), e.parent_file().name());
            for v in e.values() {
                define(v.full_name(), e.parent_file().name());
            }
        }
        for s in pool.services() {
            define(s.full_name(), s.parent_file().name());
            for m in s.methods() {
                define(m.full_name(), s.parent_file().name());
            }
        }
        let mut extensions = HashMap::new();
        let mut extension_numbers: BTreeMap<String, Vec<i32>> = pool
            .all_messages()
            .map(|m| (m.full_name().to_owned(), Vec::new()))
            .collect();
        for x in pool.all_extensions() {
            define(x.full_name(), x.parent_file().name());
            let (extended, number) = (x.containing_message(), x.number() as i32);
            extensions.insert(
                (extended.full_name().to_owned(), number),
                x.parent_file().name().to_owned(),
            );
            extension_numbers
                .entry(extended.full_name().to_owned())
                .or_default()
                .push(number);
        }
        let files = pool
            .files()
            .map(|f| {
                let file = File {
                    encoded: f.encode_to_vec(),
                    imports: f.dependencies().map(|d| d.name().to_owned()).collect(),
                };
                (f.name().to_owned(), file)
            })
            .collect();
        let mut services: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        services.sort();
        Ok(Catalog {
            files,
            symbols,
            extensions,
            extension_numbers,
            services,
        })
    }

    /// `name`, then every file it imports, directly or not, that this stream
    /// has not been sent yet (`sent`).
    fn with_imports(&self, name: &str, sent: &mut HashSet<String>) -> MessageResponse {
        let mut out = Vec::new();
        let mut queue = VecDeque::from([name.to_owned()]);
        let mut seen = HashSet::new();
        while let Some(next) = queue.pop_front() {
            if !seen.insert(next.clone()) {
                continue;
            }
            // Present: the pool refused sets with missing imports.
            let file = &self.files[&next];
            if out.is_empty() || !sent.contains(&next) {
                out.push(file.encoded.clone());
                sent.insert(next);
            }
            queue.extend(file.imports.iter().cloned());
        }
        MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }

    fn answer(&self, request: &MessageRequest, sent: &mut HashSet<String>) -> MessageResponse {
        match request {
            MessageRequest::FileByFilename(name) => match self.files.contains_key(name) {
                true => self.with_imports(name, sent),
                false => not_found(format!("no file named {name:?}")),
            },
            MessageRequest::FileContainingSymbol(symbol) => match self.symbols.get(symbol) {
                Some(file) => self.with_imports(file, sent),
                None => not_found(format!("no symbol named {symbol:?}")),
            },
            MessageRequest::FileContainingExtension(x) => {
                match self
                    .extensions
                    .get(&(x.containing_type.clone(), x.extension_number))
                {
                    Some(file) => self.with_imports(file, sent),
                    None => not_found(format!(
                        "no extension {} of {:?}",
                        x.extension_number, x.containing_type
                    )),
                }
            }
            MessageRequest::AllExtensionNumbersOfType(message) => {
                match self.extension_numbers.get(message) {
                    Some(numbers) => {
                        MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                            base_type_name: message.clone(),
                            extension_number: numbers.clone(),
                        })
                    }
                    None => not_found(format!("no message named {message:?}")),
                }
            }
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
        }
    }

    fn respond(
        &self,
        request: v1::ServerReflectionRequest,
        sent: &mut HashSet<String>,
    ) -> v1::ServerReflectionResponse {
        let answer = match &request.message_request {
            Some(question) => self.answer(question, sent),
            None => error(Code::InvalidArgument, "the request asks nothing".into()),
        };
        v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(answer),
        }
    }
}

fn error(code: Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse {
        error_code: code as i32,
        error_message: message,
    })
}

fn not_found(message: String) -> MessageResponse {
    error(Code::NotFound, message)
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The reflection service, for both protocol versions. Cheap to clone.
#[derive(Clone)]
pub struct Reflection {
    catalog: Arc<Catalog>,
}

impl Reflection {
    /// Serves the files of `descriptor_sets` (encoded `FileDescriptorSet`s).
    /// Refuses sets that cannot be decoded or import a file none of them holds.
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Self, String> {
        Ok(Reflection {
            catalog: Arc::new(Catalog::new(descriptor_sets)?),
        })
    }

    /// The `grpc.reflection.v1` service.
    pub fn v1(&self) -> v1::server_reflection_server::ServerReflectionServer<Self> {
        v1::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// The `grpc.reflection.v1alpha` service.
    pub fn v1alpha(&self) -> v1alpha::server_reflection_server::ServerReflectionServer<Self> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let catalog = self.catalog.clone();
        let mut sent = HashSet::new();
        let answers = request
            .into_inner()
            .map_while(move |r| r.ok().map(|r| Ok(catalog.respond(r, &mut sent))));
        Ok(Response::new(Box::pin(answers)))
    }
}

/// v1alpha is v1 under another package name: the same messages, field for
/// field, so each request and answer crosses over by re-encoding.
#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let catalog = self.catalog.clone();
        let mut sent = HashSet::new();
        let answers = request.into_inner().map_while(move |r| {
            let r = v1::ServerReflectionRequest::decode(r.ok()?.encode_to_vec().as_slice());
            let answer = match r {
                Ok(r) => catalog.respond(r, &mut sent),
                Err(e) => v1::ServerReflectionResponse {
                    message_response: Some(error(
                        Code::InvalidArgument,
                        format!("unreadable request: {e}"),
                    )),
                    ..Default::default()
                },
            };
            let answer =
                v1alpha::ServerReflectionResponse::decode(answer.encode_to_vec().as_slice())
                    .map_err(|e| Status::internal(format!("reflection answer: {e}")));
            Some(answer)
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(&[crate::broker::server::FILE_DESCRIPTOR_SET]).unwrap()
    }

    fn names(answer: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(r) = answer else {
            panic!("{answer:?}");
        };
        r.file_descriptor_proto
            .iter()
            .map(|b| {
                prost_types::FileDescriptorProto::decode(b.as_slice())
                    .unwrap()
                    .name
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_file_comes_with_its_imports_once_per_stream() {
        let c = catalog();
        let mut sent = HashSet::new();
        let q = MessageRequest::FileContainingSymbol("certex.v1.Cases".into());
        let mut first = names(c.answer(&q, &mut sent));
        assert_eq!(first[0], "certex/v1/cases.proto");
        first.sort();
        assert_eq!(
            first,
            [
                "certex/v1/cases.proto",
                "certex/v1/envelope.proto",
                "certex/v1/exchange.proto",
                "google/protobuf/timestamp.proto",
            ]
        );
        // Asked again on the same stream: the file, not its imports again.
        let q = MessageRequest::FileContainingSymbol("certex.v1.Exchange.Publish".into());
        assert_eq!(names(c.answer(&q, &mut sent)), ["certex/v1/exchange.proto"]);
        let q = MessageRequest::FileByFilename("google/protobuf/timestamp.proto".into());
        assert_eq!(
            names(c.answer(&q, &mut HashSet::new())),
            ["google/protobuf/timestamp.proto"]
        );
    }

    #[test]
    fn unknown_names_are_not_found_answers() {
        let c = catalog();
        for q in [
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::FileContainingSymbol("certex.v1.Nope".into()),
            MessageRequest::AllExtensionNumbersOfType("certex.v1.Nope".into()),
        ] {
            let MessageResponse::ErrorResponse(e) = c.answer(&q, &mut HashSet::new()) else {
                panic!("{q:?}");
            };
            assert_eq!(e.error_code, Code::NotFound as i32);
            assert!(e.error_message.contains("Nope") || e.error_message.contains("nope"));
        }
    }

    #[test]
    fn sets_with_missing_imports_are_refused() {
        let mut set =
            prost_types::FileDescriptorSet::decode(crate::broker::server::FILE_DESCRIPTOR_SET)
                .unwrap();
        set.file
            .retain(|f| f.name() != "google/protobuf/timestamp.proto");
        let e = Catalog::new(&[&set.encode_to_vec()]).err().unwrap();
        assert!(e.contains("reflection"), "{e}");
    }
}

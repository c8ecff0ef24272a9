//! Compiles `proto/certex/v1/*.proto` with the pure-Rust `protox` compiler (no
//! system `protoc`) and writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/certex/v1/envelope.proto",
    "proto/certex/v1/exchange.proto",
    "proto/certex/v1/directory.proto",
    "proto/certex/v1/transparency.proto",
    "proto/certex/v1/cases.proto",
    "proto/certex/v1/federation.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("certex_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // The signed body bytes are shared, never copied, between the record
        // file, the decoded envelope and the outgoing message.
        .bytes(".certex.v1.Envelope.body")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

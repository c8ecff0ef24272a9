//! Records as a subscription sends them (SPEC §7), and the gRPC codec that
//! writes them. A record a reader sees in full, unretracted and without a
//! relay list of its own, is the same message for every such reader: the
//! recent-records feeder encodes it once ([`Outgoing::Shared`]) and each
//! subscriber's copy is those bytes, not another protobuf encode. A view
//! that differs per reader (a tombstone, a retracted record, the sender's
//! own record on a federated broker) is encoded for that reader
//! ([`Outgoing::Own`]). Both are the wire form of `certex.v1.Record`, so
//! clients decode them alike.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::proto as pb;

/// The encode buffer's initial capacity.
const SEND_BUFFER: usize = 8 * 1024;
/// The size past which encoded records are handed to HTTP/2 as one chunk.
const SEND_CHUNK: usize = 16 * 1024;

/// One record of a subscription, ready for the wire.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// The protobuf encoding of a `Record`, shared by every reader who
    /// receives exactly this message.
    Shared(Bytes),
    /// A record built for one reader (boxed: the shared form is one pointer).
    Own(Box<pb::Record>),
}

impl Outgoing {
    /// Bytes the record takes on the wire (without gRPC framing).
    pub fn encoded_len(&self) -> usize {
        match self {
            Outgoing::Shared(b) => b.len(),
            Outgoing::Own(r) => r.encoded_len(),
        }
    }

    /// The record as a message (decodes a shared encoding).
    pub fn into_record(self) -> Result<pb::Record, Status> {
        match self {
            Outgoing::Shared(b) => pb::Record::decode(b)
                .map_err(|e| Status::internal(format!("a shared record does not decode: {e}"))),
            Outgoing::Own(r) => Ok(*r),
        }
    }
}

/// Encodes a record once, for sharing.
pub fn encode_shared(r: &pb::Record) -> Bytes {
    Bytes::from(r.encode_to_vec())
}

/// The codec of `Exchange.Subscribe` on the server: requests are decoded
/// by prost as everywhere; records go out as [`Outgoing`], a shared
/// encoding copied as it is.
pub struct RecordCodec<U>(PhantomData<U>);

impl<U> Default for RecordCodec<U> {
    fn default() -> Self {
        RecordCodec(PhantomData)
    }
}

impl<U: Message + Default + Send + 'static> Codec for RecordCodec<U> {
    type Encode = Outgoing;
    type Decode = U;
    type Encoder = RecordEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        RecordEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Writes an [`Outgoing`] record into tonic's frame buffer.
pub struct RecordEncoder;

impl Encoder for RecordEncoder {
    type Item = Outgoing;
    type Error = Status;

    /// Records are handed to HTTP/2 in chunks of about one frame (16 KiB)
    /// rather than tonic's 32 KiB: a chunk waits in the connection's send
    /// buffer until it is written, once per subscriber.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(SEND_BUFFER, SEND_CHUNK)
    }

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Shared(b) => {
                buf.put_slice(&b);
                Ok(())
            }
            Outgoing::Own(r) => r
                .encode(buf)
                .map_err(|e| Status::internal(format!("cannot encode a record: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> pb::Record {
        pb::Record {
            seq: 7,
            received_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            leaf_hash: vec![9; 32],
            envelope: Some(pb::Envelope {
                body: Bytes::from_static(b"\x0a\x02id"),
                signature: vec![1; 64],
                key_id: "CN-CNCERT#1".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_shared_encoding_is_the_record_as_prost_writes_it() {
        let r = record();
        let shared = Outgoing::Shared(encode_shared(&r));
        assert_eq!(shared.encoded_len(), r.encoded_len());
        assert_eq!(shared.clone().into_record().unwrap(), r);
        assert_eq!(Outgoing::Own(Box::new(r.clone())).into_record().unwrap(), r);
    }

    #[test]
    fn a_shared_encoding_that_does_not_decode_is_an_internal_error() {
        let bad = Outgoing::Shared(Bytes::from_static(b"\xff\xff\xff"));
        assert_eq!(bad.into_record().unwrap_err().code(), tonic::Code::Internal);
    }
}

//! Any CopyData payload: the frame decoder, then the pgoutput decoder on
//! XLogData, must return Ok or Err, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgsieve_protocol::{PgOutputDecoder, ReplicationMessage, StandbyStatusUpdate};

#[path = "check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    let _ = StandbyStatusUpdate::parse(payload.clone());
    if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(payload) {
        for parallel in [false, true] {
            let mut decoder = PgOutputDecoder::with_parallel_abort(parallel);
            let ctx = decoder.context();
            if let Ok(m) = decoder.decode(x.data.clone()) {
                check::check_decoded(&m, ctx);
            }
        }
    }
});

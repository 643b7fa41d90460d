//! Any pgoutput bytes under any context: the first input byte picks
//! `in_stream` / `parallel_abort`; the rest is split on a 0xFE 0xFF marker
//! into a sequence fed to one `PgOutputDecoder`, and also parsed alone.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgsieve_protocol::{LogicalMessage, ParseContext, PgOutputDecoder};

#[path = "check.rs"]
mod check;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ctx = ParseContext {
        in_stream: mode & 1 != 0,
        parallel_abort: mode & 2 != 0,
    };
    let whole = Bytes::copy_from_slice(rest);
    if let Ok(m) = LogicalMessage::parse(whole.clone(), ctx) {
        check::check_decoded(&m, ctx);
    }
    let mut decoder = PgOutputDecoder::with_parallel_abort(ctx.parallel_abort);
    let mut start = 0;
    while start <= rest.len() {
        let end = rest[start..]
            .windows(2)
            .position(|w| w == [0xFE, 0xFF])
            .map_or(rest.len(), |p| start + p);
        let before = decoder;
        let ctx = decoder.context();
        match decoder.decode(whole.slice(start..end)) {
            Ok(m) => check::check_decoded(&m, ctx),
            Err(_) => assert_eq!(decoder, before, "an error changed the decoder state"),
        }
        start = end + 2;
    }
});

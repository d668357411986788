//! `route_packet` on arbitrary bytes: the input is the request body, as is, so the corpus files
//! are plain bodies (the Python suite replays them through both backends, `tests/fuzz`).
//!
//! Every body goes through every format, strict and lenient. Checked:
//! * nothing panics (libFuzzer reports a panic as a crash);
//! * an accepted body: `count` is the sum of the batch counts, between 1 and `max_messages`;
//!   routing with a router gives the same messages as without one, split into batches;
//!   every batch is a JSON array of messages that all carry an id, so routing it again changes
//!   no byte; the analyzer (`BatchAnalyzer`) reads every batch and counts every message;
//! * a refused body: the same verdict with and without a router, and no pick drawn;
//! * the limits are monotone: one message fewer allowed gives `too_many_messages`, a smaller
//!   depth limit never accepts what the default one refuses;
//! * the raw `emitter_id` / `packet_id` decode without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wlb::analyze::BatchAnalyzer;
use wlb::json::decode_json_string;
use wlb::packet::{route_packet, ErrorCode, Format, Options, RouteError, RoutedPacket};
use wlb::router::{Router, Strategy};

const FORMATS: [Format; 3] = [Format::Auto, Format::Json, Format::Ndjson];

fn router() -> Router {
    let mut r = Router::new(Strategy::Swrr, 7);
    for (name, w) in [("a1", 1.0), ("a2", 2.0), ("a3", 0.5)] {
        r.set_target(name, w).expect("valid weight");
    }
    r
}

/// The routed messages of `body` as one batch, or the error code.
fn route(body: &[u8], opts: &Options) -> Result<RoutedPacket, ErrorCode> {
    match route_packet(body, None, "fz/", opts) {
        Ok(r) => Ok(r),
        Err(RouteError::Packet(e)) => Err(e.code),
        Err(e) => panic!("no router, valid prefix, yet {e}"),
    }
}

fn check_accepted(body: &[u8], opts: &Options, one: &RoutedPacket) {
    assert!(one.count >= 1, "an accepted packet holds a message");
    let count = i64::try_from(one.count).expect("a count fits i64");
    assert!(count <= opts.max_messages);
    assert_eq!(one.batches.len(), 1);
    let all = &one.batches[0];
    assert_eq!((all.target.as_str(), all.count), ("", one.count));

    // With a router: the same messages, split by target, each batch a subsequence.
    let mut r = router();
    let routed = route_packet(body, Some(&mut r), "fz/", opts).expect("accepted without router");
    assert_eq!(routed.count, one.count);
    assert_eq!(routed.emitter_raw, one.emitter_raw);
    assert_eq!(routed.packet_id_raw, one.packet_id_raw);
    let sum: usize = routed.batches.iter().map(|b| b.count).sum();
    assert_eq!(sum, one.count, "every message is in exactly one batch");
    let bytes: usize = routed.batches.iter().map(|b| b.bytes.len()).sum();
    assert_eq!(bytes + routed.batches.len() - 1, all.bytes.len());

    // A batch is a JSON array of messages with ids: routing it again is the identity, and the
    // analyzer reads it and counts every message.
    let again = Options {
        format: Format::Json,
        max_messages: i64::MAX,
        ..*opts
    };
    for b in routed.batches.iter().chain([all]) {
        let mut arr = Vec::with_capacity(b.bytes.len() + 2);
        arr.push(b'[');
        arr.extend_from_slice(&b.bytes);
        arr.push(b']');
        let re = route(&arr, &again).expect("a routed batch is a valid packet");
        assert_eq!(re.count, b.count);
        assert_eq!(
            re.batches[0].bytes, b.bytes,
            "every routed message has an id"
        );
        if opts.strict {
            let mut a = BatchAnalyzer::new(1 << 12, false).expect("capacity");
            let rep = a
                .ingest(&arr)
                .expect("the analyzer reads what ingest accepted");
            assert_eq!(rep.unique + rep.duplicates, b.count);
        }
    }

    // One message fewer allowed: refused as too many, and only for that.
    if one.count > 1 {
        let fewer = Options {
            max_messages: count - 1,
            ..*opts
        };
        assert_eq!(route(body, &fewer).err(), Some(ErrorCode::TooManyMessages));
    }
    for raw in [&one.emitter_raw, &one.packet_id_raw].into_iter().flatten() {
        let _ = decode_json_string(raw);
    }
}

fn check(body: &[u8], opts: &Options) {
    let verdict = route(body, opts);
    // A shallower limit never accepts more.
    let shallow = Options {
        max_depth: 3,
        ..*opts
    };
    let shallow_verdict = route(body, &shallow);
    if shallow_verdict.is_ok() {
        assert!(verdict.is_ok(), "accepted at depth 3, refused at 64");
    }
    match &verdict {
        Ok(one) => check_accepted(body, opts, one),
        Err(code) => {
            let mut r = router();
            match route_packet(body, Some(&mut r), "fz/", opts) {
                Err(RouteError::Packet(e)) => assert_eq!(e.code, *code),
                other => panic!("refused without a router ({code:?}), with one: {other:?}"),
            }
            // No pick drawn: the router goes on exactly as a fresh one.
            let next = |r: &mut Router| r.pick_many(8).expect("targets are eligible");
            assert_eq!(
                next(&mut r),
                next(&mut router()),
                "a refused packet draws no pick"
            );
        }
    }
}

fuzz_target!(|body: &[u8]| {
    for format in FORMATS {
        for strict in [true, false] {
            let opts = Options {
                format,
                strict,
                ..Options::default()
            };
            check(body, &opts);
        }
    }
});

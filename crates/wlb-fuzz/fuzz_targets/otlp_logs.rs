//! `otlp::logs_to_messages` on arbitrary bytes: the input is an OTLP/HTTP protobuf body, as is,
//! so the corpus files are plain `ExportLogsServiceRequest`s.
//!
//! Checked:
//! * nothing panics (libFuzzer reports a panic as a crash);
//! * the result does not depend on the record bound, as long as the records fit: one record
//!   fewer allowed gives `TooManyRecords` naming the count, and a malformed body is malformed
//!   under every bound;
//! * an accepted body: `error_message` is empty exactly when no record was rejected; the
//!   messages are a JSON packet that strict `route_packet` accepts with `accepted` messages
//!   (so the JSON is well-formed and every message has the logdist schema).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wlb::otlp::{logs_to_messages, OtlpError};
use wlb::packet::{route_packet, Format, Options};

fuzz_target!(|body: &[u8]| {
    let all = logs_to_messages(body, usize::MAX);
    match &all {
        Err(OtlpError::Malformed { .. }) => {
            assert_eq!(
                logs_to_messages(body, 0),
                all,
                "malformed under every bound"
            );
        }
        Err(OtlpError::TooManyRecords { .. }) => panic!("no bound, yet too many records"),
        Ok(c) => {
            let records = c.accepted + c.rejected;
            assert_eq!(logs_to_messages(body, records).as_ref(), Ok(c));
            if records > 0 {
                assert_eq!(
                    logs_to_messages(body, records - 1),
                    Err(OtlpError::TooManyRecords {
                        records,
                        max: records - 1
                    })
                );
            }
            assert_eq!(c.error_message.is_empty(), c.rejected == 0);
            if c.accepted > 0 {
                let mut packet = b"{\"messages\":".to_vec();
                packet.extend_from_slice(&c.messages);
                packet.push(b'}');
                let opts = Options {
                    format: Format::Json,
                    max_messages: i64::MAX,
                    ..Options::default()
                };
                let routed = route_packet(&packet, None, "fz/", &opts)
                    .expect("converted messages are a valid strict packet");
                assert_eq!(routed.count, c.accepted);
            } else {
                assert_eq!(c.messages, b"[]");
            }
        }
    }
});

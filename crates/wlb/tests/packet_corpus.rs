//! `route_packet` on a corpus of good and bad bodies (the same corpus as `tests/core/test_core_packet.py`),
//! plus exact-output checks: ids, raw carry-through, routing by the router's picks.

use wlb::json::{decode_json_string, Decoded};
use wlb::packet::{route_packet, validate, ErrorCode, Format, Options, RouteError};
use wlb::router::{Router, RouterError, Strategy};

const FB: &str = "req-7f3a:1/";

const GOOD: &[&[u8]] = &[
    b"{\"packet_id\": \"pkt-0001\", \"agent_id\": \"emitter-1\", \"timestamp\": \"2024-05-01T12:00:00Z\", \"messages\": [\n  {\"id\": \"m-1\", \"timestamp\": \"2024-05-01T12:00:00.123Z\", \"level\": \"ERROR\", \"source\": \"auth\", \"message\": \"login failed\", \"metadata\": {\"user\": \"bob\", \"ip\": \"10.0.0.1\"}},\n  {\"id\": \"m-2\", \"timestamp\": \"2024-05-01T12:00:00.456Z\", \"level\": \"INFO\", \"source\": \"api\", \"message\": \"GET /x 200\", \"metadata\": {}}\n]}",
    b"{\"packet_id\":\"b7c1\",\"agent_id\":\"agent-9\",\"sent_at\":\"2024-05-01T12:00:00+02:00\",\"log_messages\":[{\"id\":\"x1\",\"timestamp\":\"2024-05-01T12:00:00+02:00\",\"level\":\"WARN\",\"source\":\"db\",\"message\":\"slow query\",\"metadata\":{\"ms\":1200,\"tags\":[\"a\",\"b\"]}},{\"timestamp\":1714557600.5,\"level\":\"DEBUG\",\"source\":\"db\",\"message\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00\"}],\"metadata\":{\"region\":\"eu\"}}",
    b"[{\"message\":\"a\"}]",
    b"{\"emitter_id\":\"e\",\"agent_id\":\"a\",\"packet_id\":\"p\",\"messages\":[{\"message\":\"x\"}]}",
    b"{\"messages\":[{\"message\":\"x\",\"timestamp\":-1.5e+10,\"id\":\"0\"}],\"packet_id\":0}",
    b"{\"message\":\"a\",\"metadata\":{\"k\":\"v\"}}\n{\"message\":\"b\"}\n",
    b"\t\r\n [{\"message\":\"\\u0000\\b\\f\\n\\r\\t\\\\\\\"\\/\"}]\r\n",
    b"[{\"message\":\"x\",\"n\":-0.0e-0,\"m\":0E0,\"big\":999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999}]",
    // what the analyzer reads too: paired surrogates, escaped NULs, the largest double, an
    // underflow, an escaped backslash before "ud800"
    b"[{\"message\":\"\\ud83d\\ude00 \\uD800\\uDC00 \\udbff\\udfff\",\"k\":\"\\u0000 a\\u0000b\"}]",
    b"[{\"message\":\"x\",\"max\":1.7976931348623157e308,\"min\":-1.7976931348623157E+308,\"tiny\":-1e-999}]",
    b"[{\"message\":\"\\\\ud800 \\\\udfff\",\"n\":99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999}]",
    b"{\"emitter_id\":\"\\u00e9\",\"messages\":[{\"message\":\"x\"}]}",
    b"[{\"message\":\"\xf0\x9f\x98\x80 \xe2\x82\xac \xc2\xa2 \x7f\"}]",
    b"{\"messages\":[{\"message\":\"a\"}],\"messages_extra\":[1],\"log_messages_x\":{}}",
    b"{\"mess\\u0061ges\":[{\"m\\u0065ssage\":\"x\"}]}",
];

const BAD: &[(&[u8], ErrorCode)] = &[
    (b"", ErrorCode::BadJson),
    (b"   \n", ErrorCode::BadJson),
    (b"{", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\"}]", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\"", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\"},", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"\\u12\"}]}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"\\x\"}]}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"a\tb\"}]}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\",}]}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\"},]}", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\" \"x\"}]}", ErrorCode::BadJson),
    (b"{\"messages\":[{message:\"x\"}]}", ErrorCode::BadJson),
    (b"{'messages':[]}", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":01}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":1.}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":.5}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":+1}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":1e}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":NaN}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":Infinity}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"n\":-}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"b\":tru}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"b\":True}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"}}", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"]", ErrorCode::BadJson),
    (b"\xef\xbb\xbf[]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"}]\x00", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"}] []", ErrorCode::BadJson),
    (b"{\"messages\":[{\"message\":\"x\"}]}}", ErrorCode::BadJson),
    (b"[{\"message\":\"x\"}]garbage", ErrorCode::BadJson),
    (b"[{\"message\":\"\xff\"}]", ErrorCode::BadUtf8),
    (b"[{\"message\":\"\xc3\"}]", ErrorCode::BadUtf8),
    (b"[{\"message\":\"\xed\xa0\x80\"}]", ErrorCode::BadUtf8),
    (b"[{\"message\":\"\xc0\xaf\"}]", ErrorCode::BadUtf8),
    (b"[{\"message\":\"\xf4\x90\x80\x80\"}]", ErrorCode::BadUtf8),
    (b"\x80", ErrorCode::BadUtf8),
    (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", ErrorCode::TooDeep),
    (b"[{\"message\":\"x\",\"m\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}]", ErrorCode::TooDeep),
    (b"\"just a string\"", ErrorCode::BadSchema),
    (b"42", ErrorCode::BadSchema),
    (b"null", ErrorCode::BadSchema),
    (b"{}", ErrorCode::BadSchema),
    (b"{\"packet_id\":\"p\"}", ErrorCode::BadSchema),
    (b"{\"messages\":[{\"message\":\"x\"}],\"log_messages\":[{\"message\":\"y\"}]}", ErrorCode::BadSchema),
    (b"{\"messages\":{\"message\":\"x\"}}", ErrorCode::BadSchema),
    (b"{\"messages\":\"x\"}", ErrorCode::BadSchema),
    (b"{\"messages\":null}", ErrorCode::BadSchema),
    (b"{\"log_messages\":7}", ErrorCode::BadSchema),
    (b"{\"emitter_id\":5,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"{\"agent_id\":[\"a\"],\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"{\"packet_id\":1.0,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"{\"packet_id\":1e3,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"{\"packet_id\":true,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"{\"packet_id\":null,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadSchema),
    (b"[1]", ErrorCode::BadSchema),
    (b"[\"x\"]", ErrorCode::BadSchema),
    (b"[[]]", ErrorCode::BadSchema),
    (b"[null]", ErrorCode::BadSchema),
    (b"[{}]", ErrorCode::BadSchema),
    (b"[{\"message\":null}]", ErrorCode::BadSchema),
    (b"[{\"message\":[\"x\"]}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"level\":1}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"source\":{}}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"timestamp\":true}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"timestamp\":null}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"id\":1.5}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"id\":1e2}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"id\":null}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"metadata\":[]}]", ErrorCode::BadSchema),
    (b"[{\"message\":\"x\",\"metadata\":\"k=v\"}]", ErrorCode::BadSchema),
    (b"{\"message\":\"x\"}\n5\n", ErrorCode::BadSchema),
    // valid JSON the analyzer cannot read (orjson refuses it), anywhere in the body; the first
    // of bad_json, too_deep and bad_value wins, and bad_value beats a schema error
    (b"[{\"message\":\"x\",\"n\":1e999}]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"n\":-1e999}]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"n\":1.8E+308}]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"big\":99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\ud800\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\udfff\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\udc00\\ud800x\",\"lone\":\"\\uDFFF\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"a\\uD800b\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\ud800\\u0041\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\ud800\\n\\udc00\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"\\ud800\":1}]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"metadata\":{\"a\":[1,{\"b\":[2e999]}]}}]", ErrorCode::BadValue),
    (b"{\"packet_id\":\"\\ud800\",\"emitter_id\":\"\\u00e9\",\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadValue),
    (b"{\"emitter_id\":\"\\udfff\",\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadValue),
    (b"{\"sent_at\":1e400,\"messages\":[{\"message\":\"x\"}]}", ErrorCode::BadValue),
    (b"{\"message\":\"a\"}\n{\"message\":\"\\ud800\"}\n", ErrorCode::BadValue),
    (b"\"\\ud800\"", ErrorCode::BadValue),
    (b"[1e999]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\ud800\"}, x]", ErrorCode::BadValue),
    (b"[{\"message\":\"x\",\"n\":1e999 ]", ErrorCode::BadValue),
    (b"[{\"message\":5},{\"message\":\"\\ud800\"}]", ErrorCode::BadValue),
    (b"[{\"message\":\"\\ud800\",\"m\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]", ErrorCode::BadValue),
    (b"[x, {\"message\":\"\\ud800\"}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\\ud800\x01\"}]", ErrorCode::BadJson),
    (b"[{\"message\":\"x\",\"m\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],\"n\":1e999}]", ErrorCode::TooDeep),
    (b"[]", ErrorCode::EmptyPacket),
    (b" [ ] ", ErrorCode::EmptyPacket),
    (b"{\"messages\":[]}", ErrorCode::EmptyPacket),
    (b"{\"log_messages\":[],\"packet_id\":\"p\"}", ErrorCode::EmptyPacket),
];

fn code(body: &[u8], opts: &Options) -> ErrorCode {
    match route_packet(body, None, FB, opts) {
        Err(RouteError::Packet(e)) => {
            assert!(!e.detail.is_empty());
            e.code
        }
        other => panic!(
            "expected a packet error for {:?}, got {other:?}",
            String::from_utf8_lossy(body)
        ),
    }
}

#[test]
fn good_corpus_is_accepted() {
    for body in GOOD {
        let r = route_packet(body, None, FB, &Options::default())
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(body)));
        assert!(r.count >= 1);
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].count, r.count);
    }
}

#[test]
fn bad_corpus_gets_its_code() {
    for (body, expected) in BAD {
        assert_eq!(
            code(body, &Options::default()),
            *expected,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn ids_are_inserted_and_other_bytes_kept() {
    let body =
        br#" [ {"message":"a"} , { "level":"info", "message":"b" },{"id":"keep","message":"c"}] "#;
    let r = route_packet(body, None, FB, &Options::default()).unwrap();
    assert_eq!(r.emitter_raw, None);
    assert_eq!(r.packet_id_raw, None);
    assert_eq!(
        r.batches[0].bytes,
        br#"{"id":"req-7f3a:1/0","message":"a"},{"id":"req-7f3a:1/1", "level":"info", "message":"b" },{"id":"keep","message":"c"}"#
    );
}

#[test]
fn packet_ids_come_from_raw_emitter_and_packet_id() {
    let body = br#"{"emitter_id":"em\u0041","packet_id":-42,"messages":[{"message":"x"},{"message":"y","id":7}]}"#;
    let r = route_packet(body, None, "r1", &Options::default()).unwrap();
    assert_eq!(r.emitter_raw.as_deref(), Some(&br"em\u0041"[..]));
    assert_eq!(r.packet_id_raw.as_deref(), Some(&b"-42"[..]));
    assert_eq!(
        r.batches[0].bytes,
        br#"{"id":"em\u0041/-42/0","message":"x"},{"message":"y","id":7}"#
    );
    assert_eq!(
        decode_json_string(br"em\u0041"),
        Decoded::Utf8("emA".into())
    );
    assert_eq!(
        decode_json_string(br"\ud83d\ude00"),
        Decoded::Utf8("\u{1f600}".into())
    );
    assert_eq!(
        decode_json_string(br"a\ud800"),
        Decoded::Utf16(vec![0x61, 0xd800])
    );
}

#[test]
fn ndjson_and_auto() {
    let body = b"{\"message\":\"one\"}\n\n   \r\n{\"message\":\"two\",\"id\":7}\r\n";
    for format in [Format::Ndjson, Format::Auto] {
        let r = route_packet(
            body,
            None,
            "f/",
            &Options {
                format,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(
            r.batches[0].bytes,
            br#"{"id":"f/0","message":"one"},{"message":"two","id":7}"#
        );
    }
    let json = Options {
        format: Format::Json,
        ..Options::default()
    };
    assert_eq!(code(body, &json), ErrorCode::BadJson);
    let ndjson = Options {
        format: Format::Ndjson,
        ..Options::default()
    };
    assert_eq!(code(b"{\"message\":\n\"a\"}", &ndjson), ErrorCode::BadJson);
    assert_eq!(code(b"", &ndjson), ErrorCode::EmptyPacket);
}

#[test]
fn limits() {
    let body = br#"{"messages":[{"message":"x","metadata":{"n":[[[]]]}}]}"#;
    assert!(validate(
        body,
        &Options {
            max_depth: 7,
            ..Options::default()
        }
    )
    .is_ok());
    assert_eq!(
        code(
            body,
            &Options {
                max_depth: 6,
                ..Options::default()
            }
        ),
        ErrorCode::TooDeep
    );
    let deep = [
        &b"[{\"message\":\"x\",\"m\":"[..],
        &b"[".repeat(200_000),
        &b"]".repeat(200_000),
        b"}]",
    ]
    .concat();
    assert_eq!(code(&deep, &Options::default()), ErrorCode::TooDeep);
    let five = b"[{\"message\":\"x\"},{\"message\":\"x\"},{\"message\":\"x\"}]";
    assert!(validate(
        five,
        &Options {
            max_messages: 3,
            ..Options::default()
        }
    )
    .is_ok());
    assert_eq!(
        code(
            five,
            &Options {
                max_messages: 2,
                ..Options::default()
            }
        ),
        ErrorCode::TooManyMessages
    );
}

#[test]
fn routing_follows_the_router_and_draws_nothing_on_error() {
    let mut router = Router::new(Strategy::Alias, 99);
    for (name, w) in [("a", 1.0), ("b", 2.0), ("c", 0.0), ("d", 5.0)] {
        router.set_target(name, w).unwrap();
    }
    let mut twin = router.clone();
    // a bad body draws nothing
    assert!(route_packet(
        b"[{\"message\":5}]",
        Some(&mut router),
        "f",
        &Options::default()
    )
    .is_err());
    let n = 500;
    let body = format!(
        "[{}]",
        (0..n)
            .map(|i| format!("{{\"message\":\"m\",\"id\":{i}}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = route_packet(body.as_bytes(), Some(&mut router), "f", &Options::default()).unwrap();
    let picks = twin.pick_many(n).unwrap();
    let mut total = 0;
    for batch in &r.batches {
        let ids: Vec<String> = (0..n)
            .filter(|&i| twin.name(picks[i]) == batch.target)
            .map(|i| format!("\"id\":{i}}}"))
            .collect();
        assert_eq!(batch.count, ids.len());
        let text = String::from_utf8(batch.bytes.clone()).unwrap();
        let got: Vec<String> = text
            .split("\"message\":\"m\",")
            .skip(1)
            .map(|s| s.trim_end_matches(",{").to_owned())
            .collect();
        assert_eq!(got, ids);
        total += batch.count;
    }
    assert_eq!(total, n);
    assert!(r.batches.iter().all(|b| b.target != "c"));

    let mut none = Router::new(Strategy::Swrr, 0);
    none.set_target("a", 1.0).unwrap();
    none.set_eligible("a", false).unwrap();
    assert_eq!(
        route_packet(
            b"[{\"message\":\"x\"}]",
            Some(&mut none),
            "f",
            &Options::default()
        ),
        Err(RouteError::Router(RouterError::NoTarget))
    );
}

#[test]
fn bad_value_names_the_message_and_only_strict_mode_refuses_it() {
    let cases: [(&[u8], &str); 4] = [
        (
            br#"{"messages":[{"message":"a"},{"message":"b","n":1e999}]}"#,
            "messages[1]: number is infinity when parsed as a double (byte 48)",
        ),
        (
            br#"[{"message":"\udfff"}]"#,
            "messages[0]: lone low surrogate in string (byte 12)",
        ),
        (
            b"{\"message\":\"a\"}\n\n{\"message\":\"\\udc00\\ud800\"}\n",
            "line 3: lone low surrogate in string (byte 28)",
        ),
        (
            br#"{"emitter_id":"e\ud800","messages":[{"message":"a"}]}"#,
            "packet: high surrogate without a low one in string (byte 14)",
        ),
    ];
    let lenient = Options {
        strict: false,
        ..Options::default()
    };
    for (body, detail) in cases {
        match route_packet(body, None, FB, &Options::default()) {
            Err(RouteError::Packet(e)) => {
                assert_eq!((e.code, e.detail.as_str()), (ErrorCode::BadValue, detail));
            }
            other => panic!("{detail}: {other:?}"),
        }
        assert!(route_packet(body, None, FB, &lenient).is_ok(), "{detail}");
    }
}

#[test]
fn bad_fallback_prefix_is_an_argument_error() {
    for prefix in ["a b", "\u{e9}", "x\\y", "q\""] {
        assert!(matches!(
            route_packet(b"[{\"message\":\"x\"}]", None, prefix, &Options::default()),
            Err(RouteError::InvalidPrefix(_))
        ));
    }
}

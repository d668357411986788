//! Throughput of the pure-Rust `route_packet` on a 250-message packet of ~250-byte messages:
//! `cargo run --release -p wlb --example route_bench`.
use std::time::Instant;
use wlb::packet::{route_packet, validate, Options};
use wlb::router::{Router, Strategy};

fn main() {
    let msgs: Vec<String> = (0..250)
        .map(|i| {
            format!(
                r#"{{"timestamp": "2024-05-01T12:00:00.123456Z", "level": "INFO", "source": "service-{}", "message": "user login succeeded for account {:06} from 10.0.{}.{} via oauth2 provider xyz", "metadata": {{"request_id": "abcdef0123456789{:04}", "region": "eu-west-1"}}}}"#,
                i % 7,
                i,
                i % 255,
                i % 7,
                i
            )
        })
        .collect();
    let body = format!(
        r#"{{"emitter_id": "em-1", "packet_id": "p-1", "messages": [{}]}}"#,
        msgs.join(", ")
    );
    let body = body.as_bytes();
    let opts = Options::default();
    let mut router = Router::new(Strategy::Alias, 1);
    for (t, w) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        router.set_target(t, w).unwrap();
    }
    let n = 20_000;
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(validate(body, &opts).unwrap());
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "validate:     {:.2} M msgs/s ({:.0} MB/s)",
        f64::from(n) * 250.0 / dt / 1e6,
        f64::from(n) * body.len() as f64 / dt / 1e6
    );
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(route_packet(body, Some(&mut router), "f/", &opts).unwrap());
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "route_packet: {:.2} M msgs/s ({:.0} MB/s)",
        f64::from(n) * 250.0 / dt / 1e6,
        f64::from(n) * body.len() as f64 / dt / 1e6
    );
}

//! Prometheus answers (instant and range queries), as the client reads them once the body is
//! in: any status, content type and body are read or refused, never a panic; a refusal is
//! bounded and repeats nothing of the body unless it is a Prometheus error envelope (whose
//! `error` text is quoted on purpose, cut to 1000 characters).
#![no_main]

use frys_rollback::prometheus::client::fuzzing;
use libfuzzer_sys::fuzz_target;
use reqwest::StatusCode;

/// The seed corpus plants it in bodies; it must never come back in an error.
const CANARY: &str = "canary-7c1f";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = [200, 200, 200, 400, 401, 422, 500, 503][usize::from(selector & 7)];
    let status = StatusCode::from_u16(status).expect("valid");
    let content_type = if selector & 8 == 0 {
        "application/json"
    } else {
        "text/plain"
    };
    let envelope = serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("error"));
    let errors = [
        fuzzing::instant(status, content_type, body).err(),
        fuzzing::range(status, content_type, body).err(),
    ];
    for e in errors.into_iter().flatten() {
        let text = e.to_string();
        assert!(
            text.chars().count() < 2 * 1001 + 200,
            "{} characters",
            text.len()
        );
        if !envelope {
            assert!(!text.contains(CANARY), "{text}");
        }
    }
});

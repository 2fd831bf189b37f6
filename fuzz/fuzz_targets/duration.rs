//! Duration strings: `parse` answers any text (no panic), and what it accepts `format` writes
//! back so that `parse` reads the same duration, to the millisecond (below 2^40 s, where the
//! f64 arithmetic of Go-style parsing is exact to the millisecond).
#![no_main]

use std::time::Duration;

use frys_rollback::api::duration::{format, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(d) = parse(text) else { return };
    let written = format(d);
    let back = parse(&written);
    if d.as_secs() < 1 << 40 {
        let cut = Duration::from_millis(d.as_millis() as u64);
        assert_eq!(back.ok(), Some(cut), "{text:?} -> {d:?} -> {written:?}");
    }
});

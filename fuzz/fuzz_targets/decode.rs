//! Fuzzes the telemetry decoder: any bytes give an envelope or a rejection,
//! never a panic, and what is accepted stays accepted when written back.

#![no_main]

use ioc_schemas::envelope::{Limits, decode};
use ioc_schemas::{RejectReason, Timestamp};
use libfuzzer_sys::fuzz_target;

/// A fixed receive time, so that runs are reproducible.
const NOW: Timestamp = Timestamp(1_783_998_765_120);

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match decode(data, &limits, NOW) {
        Ok(envelope) => {
            let again = decode(&envelope.to_json(), &limits, NOW)
                .expect("an accepted envelope, written back, is accepted again");
            assert_eq!(
                (&again.device, again.ts, again.seq),
                (&envelope.device, envelope.ts, envelope.seq)
            );
        }
        Err(rejection) => {
            assert!(!rejection.detail.is_empty(), "every rejection explains itself");
            if let Some(p) = &rejection.pointer {
                assert!(p.starts_with('/'), "pointer {p:?} is a JSON pointer");
            }
            assert_eq!(RejectReason::parse(rejection.reason.code()), Some(rejection.reason));
        }
    }
});

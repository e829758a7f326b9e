// SPDX-License-Identifier: MIT OR Apache-2.0
//! Any bytes: the `.enk` reader and the kernel-record parsers must return
//! records or an error, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

use enoki_trace::{self as trace, TraceReader};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = TraceReader::new(std::io::Cursor::new(data)) {
        // A header that parses must describe a topology libEnoki accepts
        // or rejects cleanly.
        let _ = enoki::Topology::from_raw(&r.header().topology);
        while let Ok(Some(_)) = r.next_record() {}
    }
    let _ = trace::records_from_kernel(data);
    let _ = trace::topology_from_kernel(data);
});

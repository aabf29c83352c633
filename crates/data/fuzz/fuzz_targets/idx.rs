#![no_main]
//! Any bytes: the IDX parser returns Ok or a message, never panics, and an Ok
//! result is self-consistent and re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(idx) = data::idx::parse(bytes) {
        assert_eq!(idx.dims.iter().product::<usize>(), idx.data.len());
        assert_eq!(data::idx::encode(&idx.dims, &idx.data), bytes);
    }
});

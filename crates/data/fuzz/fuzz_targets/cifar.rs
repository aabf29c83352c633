#![no_main]
//! Any bytes: the CIFAR-10 parser returns Ok or a message, never panics, and an
//! Ok result has one label (0..=9) and 3072 pixels per record.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((labels, pixels)) = data::cifar::parse(bytes) {
        assert_eq!(pixels.len(), labels.len() * 3072);
        assert_eq!(labels.len() * data::cifar::RECORD, bytes.len());
        assert!(labels.iter().all(|&l| l <= 9));
    }
});

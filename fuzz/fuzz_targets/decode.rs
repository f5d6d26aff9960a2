//! Fuzz target: `Photo::decode` must return `Ok` or a `PhotoError` for any bytes, never panic,
//! abort or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visage_core::photo::{IngestOptions, Photo};

fuzz_target!(|data: &[u8]| {
    // A smaller pixel cap than the default keeps each run's allocations within libFuzzer's
    // default 2 GB RSS limit; the limit logic itself is the same.
    let options = IngestOptions {
        max_pixels: 16_000_000,
        max_side: 512,
        ..IngestOptions::default()
    };
    if let Ok(photo) = Photo::decode(data, &options) {
        assert!(photo.width() <= 512 && photo.height() <= 512);
        assert_eq!(
            photo.linear_rgb().len(),
            3 * photo.width() as usize * photo.height() as usize
        );
        assert!(photo.linear_rgb().iter().all(|v| (0.0..=1.0).contains(v)));
    }
});

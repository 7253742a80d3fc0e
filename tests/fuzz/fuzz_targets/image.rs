//! Image decoding (JPEG, PNG, BMP, GIF, TIFF, WebP) and the whole preprocessing (resize,
//! normalise) under the default limits.

#![no_main]
#![forbid(unsafe_code)]

use deepembed_image::{preprocess_with, Limits, Transform};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = preprocess_with(data, &Limits::default(), &Transform::IMAGENET);
});

//! The vision plugin library: the whole plugin lives in the `deepembed-vision` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_vision::VisionPlugin);

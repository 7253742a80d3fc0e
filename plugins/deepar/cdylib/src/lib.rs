//! The deepar plugin library: the whole plugin lives in the `deepembed-deepar` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_deepar::DeepArPlugin);

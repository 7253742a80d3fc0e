//! The gandalf plugin library: the whole plugin lives in the `deepembed-gandalf` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_gandalf::GandalfPlugin);

//! The mbert plugin library: the whole plugin lives in the `deepembed-mbert` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_mbert::MbertPlugin);

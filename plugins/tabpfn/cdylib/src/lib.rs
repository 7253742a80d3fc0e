//! The tabpfn plugin library: the whole plugin lives in the `deepembed-tabpfn` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_tabpfn::TabPfnPlugin);

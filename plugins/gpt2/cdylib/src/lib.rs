//! The gpt2 plugin library: the whole plugin lives in the `deepembed-gpt2` rlib.

#![forbid(unsafe_code)]

deepembed_sdk::export_plugin!(deepembed_gpt2::Gpt2Plugin);

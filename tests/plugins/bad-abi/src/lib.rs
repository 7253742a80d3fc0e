//! An outside plugin that claims to be built against a future SDK ABI version. The host must report it and never run it.

use deepembed_sdk::abi::abi_stable::std_types::{RResult, RStr, RString};
use deepembed_sdk::abi::{leak_root, HostCallbacks, PluginMod, PluginModRef, RunRequest};

extern "C" fn manifest() -> RString {
    RString::from(
        r#"{"name":"badabi","version":"0.3.1","modality":"tabular","description":"mismatched","models":[],"args":[]}"#,
    )
}

extern "C" fn run(_host: HostCallbacks, _request: RunRequest) -> RResult<(), RString> {
    RResult::RErr(RString::from("this plugin must never be run"))
}

fn root() -> PluginModRef {
    leak_root(PluginMod {
        sdk_abi_version: 999,
        libtorch_version: RStr::from_str(deepembed_sdk::LIBTORCH_VERSION),
        manifest,
        run,
    })
}

deepembed_sdk::export_plugin!(root = root);

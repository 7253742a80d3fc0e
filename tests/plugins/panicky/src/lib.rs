//! An outside plugin that panics mid-run: the host must report it, not abort.

use deepembed_sdk::anyhow::Result;
use deepembed_sdk::{Manifest, Plugin, RunContext};

#[derive(Default)]
struct Panicky;

impl Plugin for Panicky {
    type Options = deepembed_sdk::options::NoOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "panicky".into(),
            version: "0.3.1".into(),
            modality: "tabular".into(),
            description: "Test plugin that panics".into(),
            models: vec![],
            args: vec![],
            inputs: deepembed_sdk::InputSpec::default_inputs(),
        }
    }

    fn run(&self, _options: Self::Options, _ctx: &mut RunContext<'_>) -> Result<()> {
        let rows: Vec<u32> = Vec::new();
        panic!("boom: index {} of {} rows", 3, rows.len());
    }
}

deepembed_sdk::export_plugin!(Panicky);

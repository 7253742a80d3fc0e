//! Every registered vision version against torchvision's own description of it. The generator
//! writes shapes.json from torchvision models built on the meta device: the hub file of the
//! default weights (the ones DeepTune loads) and the name and shape of every tensor they hold.
//! Each version must load exactly those tensors, in the pretrained and the DeepTune layouts, into
//! variables built without random init, and a forward pass must give the width the registry
//! advertises. This covers every version, where
//! the parity fixtures sample one per family.

use std::collections::{BTreeMap, BTreeSet};

use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use deepembed_tests::fixtures;
use deepembed_vision::models;
use tch::{nn, Device, Kind, Tensor};

fn torchvision_shapes() -> serde_json::Map<String, serde_json::Value> {
    let path = fixtures().join("vision").join("shapes.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice::<serde_json::Value>(&text).unwrap().as_object().unwrap().clone()
}

/// A state dict of uninitialised tensors with torchvision's names and shapes. Swin's
/// `relative_position_index` buffers are left out: their values matter (Swin checks a file's
/// copy against the index it computes) and a meta-device model has none; the Swin parity
/// fixtures hold real ones.
fn state_dict(version: &str, tensors: &serde_json::Value) -> StateDict {
    let tensors: BTreeMap<String, Tensor> = tensors
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.ends_with(".relative_position_index"))
        .map(|(k, shape)| {
            let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
            (k.clone(), Tensor::empty(shape.as_slice(), (Kind::Float, Device::Cpu)))
        })
        .collect();
    StateDict::new(format!("torchvision {version}").into(), tensors)
}

#[test]
fn every_torchvision_version_has_torchvision_layout_hub_file_and_width() {
    let shapes = torchvision_shapes();
    let registered: BTreeSet<&str> =
        models::all_versions().iter().filter(|(_, v)| !v.hub_file.is_empty()).map(|(_, v)| v.name).collect();
    let torchvision: BTreeSet<&str> = shapes.keys().map(String::as_str).collect();
    assert_eq!(registered, torchvision, "registered torchvision versions differ from DeepTune's list");

    let mut failures = Vec::new();
    for (family, version) in models::all_versions() {
        let Some(expected) = shapes.get(version.name) else { continue };
        assert_eq!(version.hub_file, expected["hub_file"].as_str().unwrap(), "{}: hub file", version.name);
        let sd = state_dict(version.name, &expected["tensors"]);
        let mut use_cases = vec![(UseCase::Finetuned, version.features)];
        if let Some(width) = version.pretrained {
            use_cases.insert(0, (UseCase::Pretrained, width));
        }
        for (use_case, width) in use_cases {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let outcome = family.build(version, use_case, &sd, &vs.root()).and_then(|backbone| {
                for (name, var) in vs.variables() {
                    // Built for the file to fill: zeros (or BatchNorm's ones), never libtorch's
                    // random init, which cost half of a large model's loading (models/layers.rs).
                    let (lowest, highest) = (var.min().double_value(&[]), var.max().double_value(&[]));
                    anyhow::ensure!(lowest == highest, "{name} was randomly initialised");
                }
                sd.copy_into(&mut vs, |k| family.unused(use_case, k))?;
                let size = backbone.transform.size as i64;
                let input = Tensor::zeros([1, 3, size, size], (Kind::Float, Device::Cpu));
                let out = tch::no_grad(|| backbone.module.forward_t(&input, false)).flatten(1, -1);
                anyhow::ensure!(out.size() == [1, width], "output {:?}, advertised width {width}", out.size());
                Ok(())
            });
            eprintln!("{} {}: {}", version.name, use_case.name(), if outcome.is_ok() { "ok" } else { "FAILED" });
            if let Err(e) = outcome {
                failures.push(format!("{} ({}): {e:#}", version.name, use_case.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_family_recognises_its_own_weights_and_no_other() {
    let shapes = torchvision_shapes();
    for (version, expected) in &shapes {
        let sd = state_dict(version, &expected["tensors"]);
        let claims: Vec<(String, &str)> = models::families()
            .into_iter()
            .filter_map(|f| f.identify(&sd).map(|found| (f.name().to_string(), found)))
            .collect();
        assert_eq!(claims.len(), 1, "{version}: recognised by {claims:?}");
        assert_eq!(claims[0].1, version, "{version}: identified as {}", claims[0].1);
    }
}

/// The README's table of vision models is what `deepembed plugins` reports: every version, and
/// its width in each use case.
#[test]
fn readme_table_matches_deepembed_plugins() {
    let out = deepembed_tests::deepembed(&["plugins", "--json"]);
    assert!(out.status.success(), "{}", deepembed_tests::stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vision = listing["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "vision").expect("vision plugin");
    let reported: Vec<String> =
        vision["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme.split("| model_version | pretrained |").nth(1).expect("README has the vision models table");
    let documented: Vec<String> = table
        .lines()
        .skip(2) // the rest of the header line, and the alignment row
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "README row {line:?}");
            format!(
                "{} (pretrained: {}; finetuned/peft: {} with 1 added layer, {} with 2)",
                cells[0], cells[1], cells[2], cells[3]
            )
        })
        .collect();
    let mut sorted_reported = reported.clone();
    sorted_reported.sort();
    let mut sorted_documented = documented.clone();
    sorted_documented.sort();
    assert_eq!(sorted_documented, sorted_reported, "README's vision table differs from `deepembed plugins`");
}

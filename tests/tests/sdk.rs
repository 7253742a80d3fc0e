//! The SDK as plugin authors use it, without fixtures: every plugin links into this one test
//! binary (each is an rlib; only its thin cdylib exports the root symbol), typed options
//! declare their flags, and weights are shape-checked as they load.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::{Weights, ANY};
use deepembed_sdk::{ArgKind, Plugin};
use tch::{Device, Tensor};

#[test]
fn every_plugin_links_into_one_binary_and_declares_its_flags_once() {
    let manifests = [
        deepembed_vision::VisionPlugin.manifest(),
        deepembed_mbert::MbertPlugin.manifest(),
        deepembed_gpt2::Gpt2Plugin.manifest(),
        deepembed_gandalf::GandalfPlugin.manifest(),
    ];
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["vision", "mbert", "gpt2", "gandalf"]);
    for m in &manifests {
        let mut flags: Vec<&str> = m.args.iter().map(|a| a.name.as_str()).collect();
        let declared = flags.len();
        flags.sort();
        flags.dedup();
        assert_eq!(flags.len(), declared, "{}: a flag is declared twice", m.name);
        assert_eq!(m.inputs.len(), 1, "{}: reads one table, --df", m.name);
        assert!(m.args.iter().all(|a| !a.help.is_empty()), "{}: every flag has help", m.name);
    }
    // The shared options are the SDK's: the same flag, kind and bounds in every plugin.
    let spec = |m: usize, name: &str| manifests[m].args.iter().find(|a| a.name == name).unwrap().clone();
    for (m, flag) in [(0, "added_layers"), (1, "added_layers"), (1, "max_length"), (2, "max_length")] {
        assert_eq!(spec(m, flag).kind, ArgKind::Int);
    }
    assert_eq!((spec(0, "added_layers").min, spec(0, "added_layers").max), (Some(1), Some(2)));
    assert_eq!(spec(1, "padding").choices, spec(2, "padding").choices);
    assert_eq!(spec(0, "use_case").choices, ["pretrained", "finetuned", "peft"]);
    assert!(spec(3, "model_weights").required && spec(3, "model_weights").kind == ArgKind::Path);
    assert!(!spec(0, "model_weights").required, "vision finds torchvision's file without it");
}

fn state_dict(tensors: Vec<(&str, Tensor)>) -> StateDict {
    let tensors: BTreeMap<String, Tensor> = tensors.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    StateDict::new(PathBuf::from("model.ckpt"), tensors)
}

#[test]
fn a_wrong_shaped_weight_fails_at_load_naming_file_key_and_both_shapes() {
    let sd = state_dict(vec![
        ("fc2.weight", Tensor::from(1.5f32)),
        ("fc1.weight", Tensor::zeros([4, 3], (tch::Kind::Float, Device::Cpu))),
        ("fc1.bias", Tensor::zeros([5], (tch::Kind::Float, Device::Cpu))),
        ("table", Tensor::zeros([7], (tch::Kind::Float, Device::Cpu))),
        ("codes", Tensor::zeros([2, 2], (tch::Kind::Int64, Device::Cpu))),
    ]);
    let w = Weights::new(&sd, Device::Cpu);
    let err = w.tensor("fc2.weight", &[2, 4]).unwrap_err().to_string();
    assert_eq!(err, "model.ckpt: fc2.weight has shape [], expected [2, 4]");
    let err = w.linear("fc1", 3, ANY).unwrap_err().to_string();
    assert!(err.contains("fc1.bias has shape [5], expected [4]"), "{err}");
    let err = w.tensor("table", &[ANY, ANY]).unwrap_err().to_string();
    assert!(err.contains("table has shape [7], expected [_, _]"), "{err}");
    let err = w.tensor("codes", &[2, 2]).unwrap_err().to_string();
    assert!(err.contains("codes has dtype Int64"), "{err}");
    let err = w.at("encoder").tensor("missing", &[1]).unwrap_err().to_string();
    assert_eq!(err, "model.ckpt has no weight encoder.missing");
    assert_eq!(w.at("fc1").tensor("weight", &[4, ANY]).unwrap().size(), [4, 3]);
}

#[test]
fn lora_weights_of_the_wrong_rank_are_an_error_not_a_panic() {
    let float = (tch::Kind::Float, Device::Cpu);
    for (a, b) in [
        (Tensor::from(0.5f32), Tensor::zeros([4, 2], float)),
        (Tensor::zeros([2, 3], float), Tensor::zeros([4], float)),
        (Tensor::zeros([0, 3], float), Tensor::zeros([4, 0], float)),
    ] {
        let sd = state_dict(vec![
            ("layer.base_layer.weight", Tensor::zeros([4, 3], float)),
            ("layer.lora_A.default.weight", a),
            ("layer.lora_B.default.weight", b),
        ]);
        let err = deepembed_sdk::lora::merge(&sd, &deepembed_sdk::lora::LoraSettings::with_alpha(16.0))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("model.ckpt: layer.lora_"), "{err}");
    }
}

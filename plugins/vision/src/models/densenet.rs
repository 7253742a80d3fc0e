//! DenseNet-121/161/169/201 (torchvision's layout). The backbone is torchvision's `features`,
//! then ReLU, a global average pool and flatten: 1024, 2208, 1664 or 1920 features.
//!
//! Written here rather than taken from `tch::vision::densenet`, whose transition and final
//! pools sum instead of averaging. DeepTune offers DenseNet embeddings only through its added
//! embedding layer (`--added_layers 2`), so pretrained use and one added layer are refused.

use anyhow::{bail, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct DenseNet;

inventory::submit! { Registration(&DenseNet) }

/// Why DeepTune extracts DenseNet embeddings only from its added layer.
const REASON: &str = "DeepTune extracts DenseNet embeddings only through the intermediate embedding layer \
    (a finetuned or peft checkpoint with --added_layers 2): the layer before DenseNet's classifier is a BatchNorm, \
    whose normalised features are not a meaningful image representation";

const fn version(name: &'static str, hub_file: &'static str, features: i64) -> Version {
    Version { name, hub_file, features, pretrained: None }
}

const VERSIONS: &[Version] = &[
    version("densenet121", "densenet121-a639ec97.pth", 1024),
    version("densenet161", "densenet161-8d451a50.pth", 2208),
    version("densenet169", "densenet169-b2777c0a.pth", 1664),
    version("densenet201", "densenet201-c1103571.pth", 1920),
];

/// torchvision's configuration of a version: growth rate, layers per dense block, channels of
/// the stem. Every version uses bottlenecks of 4 x growth channels.
struct Config {
    growth: i64,
    blocks: [usize; 4],
    stem: i64,
}

fn config(name: &str) -> Config {
    match name {
        "densenet161" => Config { growth: 48, blocks: [6, 12, 36, 24], stem: 96 },
        "densenet169" => Config { growth: 32, blocks: [6, 12, 32, 32], stem: 64 },
        "densenet201" => Config { growth: 32, blocks: [6, 12, 48, 32], stem: 64 },
        _ => Config { growth: 32, blocks: [6, 12, 24, 16], stem: 64 },
    }
}

const BN_SIZE: i64 = 4;

fn conv(p: nn::Path, inputs: i64, outputs: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig { stride, padding, bias: false, ..Default::default() };
    layers::conv2d(p, inputs, outputs, kernel, cfg)
}

fn norm(p: nn::Path, channels: i64) -> nn::BatchNorm {
    layers::batch_norm2d(p, channels, Default::default())
}

/// BN, ReLU, 1x1 conv to 4 x growth, BN, ReLU, 3x3 conv to growth: the new channels one layer
/// adds to the block's running concatenation.
struct DenseLayer {
    norm1: nn::BatchNorm,
    conv1: nn::Conv2D,
    norm2: nn::BatchNorm,
    conv2: nn::Conv2D,
}

impl DenseLayer {
    fn new(p: &nn::Path, inputs: i64, growth: i64) -> DenseLayer {
        let width = BN_SIZE * growth;
        DenseLayer {
            norm1: norm(p / "norm1", inputs),
            conv1: conv(p / "conv1", inputs, width, 1, 1, 0),
            norm2: norm(p / "norm2", width),
            conv2: conv(p / "conv2", width, growth, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.apply_t(&self.norm1, false).relu_().apply(&self.conv1);
        y.apply_t(&self.norm2, false).relu_().apply(&self.conv2)
    }
}

/// BN, ReLU, 1x1 conv halving the channels, 2x2 average pool.
struct Transition {
    norm: nn::BatchNorm,
    conv: nn::Conv2D,
}

struct Model {
    conv0: nn::Conv2D,
    norm0: nn::BatchNorm,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: nn::BatchNorm,
}

impl Model {
    fn new(p: &nn::Path, cfg: &Config) -> Model {
        let f = p / "features";
        let mut channels = cfg.stem;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (b, &layers) in cfg.blocks.iter().enumerate() {
            let block = &f / format!("denseblock{}", b + 1);
            let layers: Vec<DenseLayer> = (0..layers)
                .map(|i| {
                    DenseLayer::new(
                        &(&block / format!("denselayer{}", i + 1)),
                        channels + i as i64 * cfg.growth,
                        cfg.growth,
                    )
                })
                .collect();
            channels += layers.len() as i64 * cfg.growth;
            blocks.push(layers);
            if b + 1 < cfg.blocks.len() {
                let t = &f / format!("transition{}", b + 1);
                transitions.push(Transition {
                    norm: norm(&t / "norm", channels),
                    conv: conv(&t / "conv", channels, channels / 2, 1, 1, 0),
                });
                channels /= 2;
            }
        }
        Model {
            conv0: conv(&f / "conv0", 3, cfg.stem, 7, 2, 3),
            norm0: norm(&f / "norm0", cfg.stem),
            blocks,
            transitions,
            norm5: norm(&f / "norm5", channels),
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DenseNet")
    }
}

impl ModuleT for Model {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut x =
            x.apply(&self.conv0).apply_t(&self.norm0, false).relu_().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (b, block) in self.blocks.iter().enumerate() {
            // Each layer sees every earlier output, in order: the block input, then each
            // layer's new channels.
            for layer in block {
                let new = layer.forward(&x);
                x = Tensor::cat(&[x, new], 1);
            }
            if let Some(t) = self.transitions.get(b) {
                x = x.apply_t(&t.norm, false).relu_().apply(&t.conv).avg_pool2d(
                    [2, 2],
                    [2, 2],
                    [0, 0],
                    false,
                    true,
                    None::<i64>,
                );
            }
        }
        // torchvision's forward after `features`: ReLU, global average pool, flatten.
        x.apply_t(&self.norm5, false).relu_().adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

/// torchvision's current name for a key of its original DenseNet files, which name the layers of
/// a dense layer `norm.1`, `conv.2` and so on (torchvision renames them when loading, and its
/// hub files still have the old names).
fn modern_name(key: &str) -> Option<String> {
    let (head, tail) = key.rsplit_once('.')?;
    if !matches!(tail, "weight" | "bias" | "running_mean" | "running_var") {
        return None;
    }
    let (layer, index) = head.rsplit_once('.')?;
    if index != "1" && index != "2" {
        return None;
    }
    let (path, kind) = layer.rsplit_once('.')?;
    let dense = path.rsplit('.').next()?;
    let is_dense_layer =
        dense.strip_prefix("denselayer").is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
    if !is_dense_layer || !matches!(kind, "norm" | "relu" | "conv") {
        return None;
    }
    Some(format!("{path}.{kind}{index}.{tail}"))
}

impl Family for DenseNet {
    fn name(&self) -> &'static str {
        "densenet"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn refuse(&self, version: &Version, use_case: UseCase, added_layers: Option<i64>) -> Result<()> {
        match (use_case, added_layers) {
            (UseCase::Pretrained, _) => bail!("--use_case pretrained is not available for {}: {REASON}", version.name),
            (_, Some(n)) if n != 2 => bail!(
                "{} with --added_layers {n} is not available (the checkpoint has {n} added layer{}): {REASON}",
                version.name,
                if n == 1 { "" } else { "s" }
            ),
            _ => Ok(()),
        }
    }

    fn rename(&self, weights: StateDict) -> StateDict {
        if !weights.keys().any(|k| modern_name(k).is_some()) {
            return weights;
        }
        weights.renamed(|k| Some(modern_name(k).unwrap_or_else(|| k.to_string())))
    }

    fn build(&self, version: &Version, _: UseCase, _: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let module = Box::new(Model::new(p, &config(version.name)));
        Ok(Backbone { module, transform: Transform::IMAGENET })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        // Counted on the first BatchNorm of each dense layer, under either naming.
        let layers = |block: usize| {
            (1..)
                .take_while(|i| {
                    let layer = format!("features.denseblock{block}.denselayer{i}");
                    weights.contains(&format!("{layer}.norm1.weight"))
                        || weights.contains(&format!("{layer}.norm.1.weight"))
                })
                .count()
        };
        let stem = weights.shape("features.conv0.weight")?.first().copied()?;
        let found = [layers(1), layers(2), layers(3), layers(4)];
        VERSIONS.iter().map(|v| v.name).find(|name| {
            let cfg = config(name);
            cfg.blocks == found && cfg.stem == stem
        })
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        key.ends_with("num_batches_tracked") || key.starts_with("classifier.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_dense_layer_names_become_torchvision_names() {
        let cases = [
            ("features.denseblock1.denselayer1.norm.1.weight", Some("features.denseblock1.denselayer1.norm1.weight")),
            ("features.denseblock3.denselayer24.conv.2.weight", Some("features.denseblock3.denselayer24.conv2.weight")),
            (
                "features.denseblock2.denselayer10.norm.2.running_var",
                Some("features.denseblock2.denselayer10.norm2.running_var"),
            ),
            ("features.denseblock2.denselayer10.norm.2.num_batches_tracked", None),
            ("features.denseblock1.denselayer1.norm1.weight", None),
            ("features.transition1.norm.weight", None),
            ("features.norm5.bias", None),
            ("features.denseblock1.denselayerX.conv.1.weight", None),
            ("features.denseblock1.denselayer1.conv.3.weight", None),
        ];
        for (old, new) in cases {
            assert_eq!(modern_name(old).as_deref(), new, "{old}");
        }
    }

    #[test]
    fn files_with_legacy_names_load_under_torchvision_names() {
        let legacy = [
            "features.conv0.weight",
            "features.denseblock1.denselayer1.norm.1.weight",
            "features.denseblock1.denselayer1.conv.2.weight",
            "features.transition1.conv.weight",
        ];
        let tensors = legacy.iter().map(|k| (k.to_string(), Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu))));
        let sd = DenseNet.rename(StateDict::new("legacy.pth".into(), tensors.collect()));
        let keys: Vec<&str> = sd.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "features.conv0.weight",
                "features.denseblock1.denselayer1.conv2.weight",
                "features.denseblock1.denselayer1.norm1.weight",
                "features.transition1.conv.weight",
            ]
        );
    }

    #[test]
    fn refusals_give_deeptunes_reason() {
        let v = &VERSIONS[0];
        let pretrained = DenseNet.refuse(v, UseCase::Pretrained, None).unwrap_err().to_string();
        assert!(pretrained.contains("BatchNorm"), "{pretrained}");
        let one = DenseNet.refuse(v, UseCase::Finetuned, Some(1)).unwrap_err().to_string();
        assert!(one.contains("--added_layers 1") && one.contains("BatchNorm"), "{one}");
        assert!(DenseNet.refuse(v, UseCase::Peft, Some(1)).is_err());
        assert!(DenseNet.refuse(v, UseCase::Peft, Some(2)).is_ok());
        assert!(DenseNet.refuse(v, UseCase::Finetuned, Some(2)).is_ok());
    }
}

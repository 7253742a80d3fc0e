//! VGG-11/13/16/19 without batch norm (torchvision's configurations A, B, D, E).
//!
//! Every use case embeds `features`, the 7x7 adaptive average pool and flatten: 512 * 7 * 7 =
//! 25088 features. Finetuned and peft: DeepTune replaces the whole `classifier` by identity.
//! Pretrained: DeepTune replaces the last classifier layer, then its embedding step keeps every
//! child of the model but the last, which is the whole `classifier`.

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct Vgg;

inventory::submit! { Registration(&Vgg) }

const FEATURES: i64 = 512 * 7 * 7;

const fn version(name: &'static str, hub_file: &'static str) -> Version {
    Version { name, hub_file, features: FEATURES, pretrained: Some(FEATURES) }
}

const VERSIONS: &[Version] = &[
    version("vgg11", "vgg11-8a719046.pth"),
    version("vgg13", "vgg13-19584684.pth"),
    version("vgg16", "vgg16-397923af.pth"),
    version("vgg19", "vgg19-dcbb9e9d.pth"),
];

/// A max pool in a configuration.
const M: i64 = 0;

/// torchvision's configurations: the output channels of each 3x3 convolution, `M` for a 2x2
/// max pool.
fn config(name: &str) -> &'static [i64] {
    match name {
        "vgg13" => &[64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
        "vgg16" => &[64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
        "vgg19" => &[64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
        _ => &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    }
}

/// The `features.N` indices of the convolutions: each convolution is followed by its ReLU
/// (two indices), each pool takes one.
fn conv_indices(cfg: &[i64]) -> Vec<usize> {
    let mut index = 0;
    let mut convs = Vec::new();
    for &c in cfg {
        if c == M {
            index += 1;
        } else {
            convs.push(index);
            index += 2;
        }
    }
    convs
}

enum Layer {
    Conv(nn::Conv2D),
    Pool,
}

struct Model {
    features: Vec<Layer>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VGG")
    }
}

impl ModuleT for Model {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for layer in &self.features {
            x = match layer {
                Layer::Conv(conv) => x.apply(conv).relu_(),
                Layer::Pool => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            };
        }
        // At 224x224 the features are already 7x7 and the pool changes nothing.
        x.adaptive_avg_pool2d([7, 7]).flatten(1, -1)
    }
}

impl Family for Vgg {
    fn name(&self) -> &'static str {
        "vgg"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn build(&self, version: &Version, _: UseCase, _: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let cfg = config(version.name);
        let f = p / "features";
        let mut features = Vec::new();
        let mut channels = 3;
        let mut index = 0;
        for &c in cfg {
            if c == M {
                features.push(Layer::Pool);
                index += 1;
            } else {
                let conv =
                    layers::conv2d(&f / index, channels, c, 3, nn::ConvConfig { padding: 1, ..Default::default() });
                features.push(Layer::Conv(conv));
                channels = c;
                index += 2;
            }
        }
        Ok(Backbone { module: Box::new(Model { features }), transform: Transform::IMAGENET })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        // The convolutions are the 4-dimensional `features.N.weight`; their indices tell the
        // configuration apart from another (and from the batch-norm variants, whose indices
        // differ).
        let mut convs: Vec<usize> = weights
            .keys()
            .filter_map(|k| k.strip_prefix("features.")?.strip_suffix(".weight")?.parse().ok())
            .filter(|i: &usize| weights.shape(&format!("features.{i}.weight")).is_some_and(|s| s.len() == 4))
            .collect();
        convs.sort_unstable();
        VERSIONS.iter().map(|v| v.name).find(|name| conv_indices(config(name)) == convs)
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        // The embedding stops before the classifier (a DeepTune checkpoint has none at all).
        key.starts_with("classifier.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convolutions_sit_at_torchvisions_indices() {
        assert_eq!(conv_indices(config("vgg11")), [0, 3, 6, 8, 11, 13, 16, 18]);
        assert_eq!(conv_indices(config("vgg16")).len(), 13);
        assert_eq!(conv_indices(config("vgg19")).last(), Some(&34));
    }
}

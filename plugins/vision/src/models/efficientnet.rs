//! EfficientNet-B0 .. B7 as torchvision builds them (not tch's EfficientNet, which pads stride-2
//! convolutions TensorFlow's way and always uses batch-norm eps 1e-3): MBConv blocks with
//! symmetric padding `(k - 1) / 2`, squeeze-excitation (SiLU, then a sigmoid gate), SiLU
//! activations, and eps 1e-5 for B0-B4, 1e-3 for B5-B7. The output is the pooled input of
//! torchvision's `classifier` (1280 .. 2560 wide) in every use case: DeepTune's adjusted model
//! replaces `classifier` by identity.
//!
//! A peft checkpoint made with DeepTune's pinned peft (0.10) carries a dense LoRA on each
//! depthwise convolution; merged, that layer is a full convolution (see `deepembed_sdk::lora`),
//! so a depthwise layer whose weight is dense is built with groups 1.

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct EfficientNet;

inventory::submit! { Registration(&EfficientNet) }

const fn version(name: &'static str, hub_file: &'static str, features: i64) -> Version {
    Version { name, hub_file, features, pretrained: Some(features) }
}

// DeepTune asks torchvision for `weights="DEFAULT"`: IMAGENET1K_V1 for every version but B1,
// whose default is IMAGENET1K_V2.
const VERSIONS: &[Version] = &[
    version("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 1280),
    version("efficientnet_b1", "efficientnet_b1-c27df63c.pth", 1280),
    version("efficientnet_b2", "efficientnet_b2_rwightman-c35c1473.pth", 1408),
    version("efficientnet_b3", "efficientnet_b3_rwightman-b3899882.pth", 1536),
    version("efficientnet_b4", "efficientnet_b4_rwightman-23ab8bcd.pth", 1792),
    version("efficientnet_b5", "efficientnet_b5_lukemelas-1a07897c.pth", 2048),
    version("efficientnet_b6", "efficientnet_b6_lukemelas-24a108a5.pth", 2304),
    version("efficientnet_b7", "efficientnet_b7_lukemelas-c5b4e57e.pth", 2560),
];

/// Width and depth multipliers and batch-norm eps of each version, in `VERSIONS` order.
const SCALING: [(f64, f64, f64); 8] = [
    (1.0, 1.0, 1e-5),
    (1.0, 1.1, 1e-5),
    (1.1, 1.2, 1e-5),
    (1.2, 1.4, 1e-5),
    (1.4, 1.8, 1e-5),
    (1.6, 2.2, 1e-3),
    (1.8, 2.6, 1e-3),
    (2.0, 3.1, 1e-3),
];

/// B0's stages before scaling: (expand ratio, kernel, stride, input channels, output channels,
/// blocks).
const STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, at least 8, and never more
/// than 10% below `v`.
fn round_channels(v: f64) -> i64 {
    let rounded = (8_i64).max(((v + 4.0) as i64) / 8 * 8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

/// One stage after scaling.
struct Stage {
    expand: i64,
    kernel: i64,
    stride: i64,
    input: i64,
    output: i64,
    blocks: i64,
}

/// The stages of the version at `index` in `VERSIONS`, and its batch-norm eps.
fn architecture(index: usize) -> (Vec<Stage>, f64) {
    let (width, depth, eps) = SCALING[index];
    let stages = STAGES
        .iter()
        .map(|&(expand, kernel, stride, input, output, blocks)| Stage {
            expand,
            kernel,
            stride,
            input: round_channels(input as f64 * width),
            output: round_channels(output as f64 * width),
            blocks: (blocks as f64 * depth).ceil() as i64,
        })
        .collect();
    (stages, eps)
}

/// torchvision's `Conv2dNormActivation`: convolution without bias (`<path>.0`), batch norm
/// (`<path>.1`), optionally SiLU.
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    silu: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(p: &nn::Path, input: i64, output: i64, kernel: i64, stride: i64, groups: i64, eps: f64, silu: bool) -> Self {
        let config = nn::ConvConfig { stride, padding: (kernel - 1) / 2, groups, bias: false, ..Default::default() };
        let conv = layers::conv2d(p / "0", input, output, kernel, config);
        let bn = layers::batch_norm2d(p / "1", output, nn::BatchNormConfig { eps, ..Default::default() });
        ConvBn { conv, bn, silu }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = x.apply(&self.conv).apply_t(&self.bn, false);
        if self.silu {
            y.silu_()
        } else {
            y
        }
    }
}

/// Squeeze-excitation: global average, 1x1 conv (`fc1`), SiLU, 1x1 conv (`fc2`), sigmoid, and the
/// input scaled per channel by the result.
struct SqueezeExcitation {
    fc1: nn::Conv2D,
    fc2: nn::Conv2D,
}

impl SqueezeExcitation {
    fn new(p: &nn::Path, channels: i64, squeeze: i64) -> Self {
        let fc1 = layers::conv2d(p / "fc1", channels, squeeze, 1, Default::default());
        let fc2 = layers::conv2d(p / "fc2", squeeze, channels, 1, Default::default());
        SqueezeExcitation { fc1, fc2 }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let scale = x.adaptive_avg_pool2d([1, 1]).apply(&self.fc1).silu().apply(&self.fc2).sigmoid();
        x * scale
    }
}

/// An inverted-residual block: 1x1 expansion (absent when the ratio is 1), depthwise kxk,
/// squeeze-excitation, 1x1 projection without activation; residual when the shape is kept
/// (stochastic depth is the identity in eval).
struct MBConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: SqueezeExcitation,
    project: ConvBn,
    residual: bool,
}

impl MBConv {
    fn new(p: &nn::Path, weights: &StateDict, stage: &Stage, input: i64, stride: i64, eps: f64) -> MBConv {
        let block = p / "block";
        let expanded = round_channels(input as f64 * stage.expand as f64);
        let mut index = 0;
        let mut next = || {
            let path = &block / index;
            index += 1;
            path
        };
        let expand = (expanded != input).then(|| ConvBn::new(&next(), input, expanded, 1, 1, 1, eps, true));
        let dw_path = next();
        // A merged peft-0.10 LoRA turns the depthwise weight [C, 1, k, k] into a dense [C, C, k, k].
        let dense = weights.shape(&(&dw_path / 0).path("weight")).is_some_and(|s| s.len() == 4 && s[1] > 1);
        let groups = if dense { 1 } else { expanded };
        let depthwise = ConvBn::new(&dw_path, expanded, expanded, stage.kernel, stride, groups, eps, true);
        let se = SqueezeExcitation::new(&next(), expanded, (input / 4).max(1));
        let project = ConvBn::new(&next(), expanded, stage.output, 1, 1, 1, eps, false);
        MBConv { expand, depthwise, se, project, residual: stride == 1 && input == stage.output }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = match &self.expand {
            Some(expand) => expand.forward(x),
            None => x.shallow_clone(),
        };
        y = self.depthwise.forward(&y);
        y = self.se.forward(&y);
        y = self.project.forward(&y);
        if self.residual {
            y + x
        } else {
            y
        }
    }
}

/// `features` (stem, seven stages, 1x1 head convolution), then the global average.
struct Network {
    stem: ConvBn,
    blocks: Vec<MBConv>,
    head: ConvBn,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EfficientNet({} blocks)", self.blocks.len())
    }
}

impl Network {
    fn new(p: &nn::Path, index: usize, weights: &StateDict) -> Network {
        let (stages, eps) = architecture(index);
        let features = p / "features";
        let stem = ConvBn::new(&(&features / 0), 3, stages[0].input, 3, 2, 1, eps, true);
        let mut blocks = Vec::new();
        for (s, stage) in stages.iter().enumerate() {
            let stage_path = &features / (s + 1);
            for b in 0..stage.blocks {
                // Only a stage's first block changes width and stride.
                let (input, stride) = if b == 0 { (stage.input, stage.stride) } else { (stage.output, 1) };
                blocks.push(MBConv::new(&(&stage_path / b), weights, stage, input, stride, eps));
            }
        }
        let last = stages[stages.len() - 1].output;
        let head = ConvBn::new(&(&features / (stages.len() + 1)), last, 4 * last, 1, 1, 1, eps, true);
        Network { stem, blocks, head }
    }
}

impl ModuleT for Network {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut y = self.stem.forward(x);
        for block in &self.blocks {
            y = block.forward(&y);
        }
        self.head.forward(&y).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

impl Family for EfficientNet {
    fn name(&self) -> &'static str {
        "efficientnet"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn build(&self, version: &Version, _: UseCase, weights: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let index = VERSIONS.iter().position(|v| v.name == version.name).unwrap_or(0);
        let module = Box::new(Network::new(p, index, weights));
        Ok(Backbone { module, transform: Transform::IMAGENET })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        // Blocks per stage and the head width tell the versions apart (B0 and B1 share widths,
        // B1 and B2 share depths).
        let depths: Vec<i64> = (1..=7)
            .map(|s| {
                (0..).take_while(|b| weights.contains(&format!("features.{s}.{b}.block.0.0.weight"))).count() as i64
            })
            .collect();
        let head = weights.shape("features.8.0.weight")?.first().copied()?;
        (0..VERSIONS.len()).find_map(|i| {
            let (stages, _) = architecture(i);
            let expected: Vec<i64> = stages.iter().map(|s| s.blocks).collect();
            (expected == depths && VERSIONS[i].features == head).then_some(VERSIONS[i].name)
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
    fn scaled_widths_and_depths_are_torchvisions() {
        // torchvision 0.26: (stem width, blocks per stage, stage output widths, head width, eps).
        type Expected = (i64, [i64; 7], [i64; 7], i64, f64);
        let expected: [Expected; 8] = [
            (32, [1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320], 1280, 1e-5),
            (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 40, 80, 112, 192, 320], 1280, 1e-5),
            (32, [2, 3, 3, 4, 4, 5, 2], [16, 24, 48, 88, 120, 208, 352], 1408, 1e-5),
            (40, [2, 3, 3, 5, 5, 6, 2], [24, 32, 48, 96, 136, 232, 384], 1536, 1e-5),
            (48, [2, 4, 4, 6, 6, 8, 2], [24, 32, 56, 112, 160, 272, 448], 1792, 1e-5),
            (48, [3, 5, 5, 7, 7, 9, 3], [24, 40, 64, 128, 176, 304, 512], 2048, 1e-3),
            (56, [3, 6, 6, 8, 8, 11, 3], [32, 40, 72, 144, 200, 344, 576], 2304, 1e-3),
            (64, [4, 7, 7, 10, 10, 13, 4], [32, 48, 80, 160, 224, 384, 640], 2560, 1e-3),
        ];
        for (i, (stem, depths, widths, head, eps)) in expected.into_iter().enumerate() {
            let (stages, found_eps) = architecture(i);
            let name = VERSIONS[i].name;
            assert_eq!(stages[0].input, stem, "{name}");
            assert_eq!(stages.iter().map(|s| s.blocks).collect::<Vec<_>>(), depths, "{name}");
            assert_eq!(stages.iter().map(|s| s.output).collect::<Vec<_>>(), widths, "{name}");
            assert_eq!(4 * stages[6].output, head, "{name}");
            assert_eq!(VERSIONS[i].features, head, "{name}");
            assert_eq!(found_eps, eps, "{name}");
        }
    }
}

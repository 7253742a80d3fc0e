//! ResNet-18/34/50/101/152 (torchvision's layout: stride on the 3x3 convolution of bottleneck
//! blocks, "ResNet v1.5"), without the final `fc`: the output is the 512 or 2048 pooled features,
//! in every use case.
//!
//! Written here rather than taken from `tch::vision::resnet` for one reason: torchvision's ReLUs
//! and residual additions work in place, tch's allocate a new tensor each. In place is the same
//! arithmetic with less memory traffic (see docs/BENCHMARKS.md for what it gained).

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct ResNet;

inventory::submit! { Registration(&ResNet) }

const fn version(name: &'static str, hub_file: &'static str, features: i64) -> Version {
    Version { name, hub_file, features, pretrained: Some(features) }
}

const VERSIONS: &[Version] = &[
    version("resnet18", "resnet18-f37072fd.pth", 512),
    version("resnet34", "resnet34-b627a593.pth", 512),
    version("resnet50", "resnet50-0676ba61.pth", 2048),
    version("resnet101", "resnet101-63fe2227.pth", 2048),
    version("resnet152", "resnet152-394f9c45.pth", 2048),
];

impl Family for ResNet {
    fn name(&self) -> &'static str {
        "resnet"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn build(&self, version: &Version, _: UseCase, _: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let (blocks, bottleneck) = match version.name {
            "resnet18" => ([2, 2, 2, 2], false),
            "resnet34" => ([3, 4, 6, 3], false),
            "resnet50" => ([3, 4, 6, 3], true),
            "resnet101" => ([3, 4, 23, 3], true),
            _ => ([3, 8, 36, 3], true),
        };
        Ok(Backbone { module: Box::new(ResNetFeatures::new(p, blocks, bottleneck)), transform: Transform::IMAGENET })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        let blocks =
            |layer: usize| (0..).take_while(|i| weights.contains(&format!("layer{layer}.{i}.conv1.weight"))).count();
        let bottleneck = weights.contains("layer1.0.conv3.weight");
        Some(match (blocks(1), blocks(3), bottleneck) {
            (0, _, _) => return None,
            (2, 2, false) => "resnet18",
            (3, 6, false) => "resnet34",
            (3, 6, true) => "resnet50",
            (3, 23, true) => "resnet101",
            (3, 36, true) => "resnet152",
            _ => return None,
        })
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        key.ends_with("num_batches_tracked") || key.starts_with("fc.")
    }
}

/// A block's output channels: a bottleneck widens its last convolution fourfold.
fn block_out(width: i64, bottleneck: bool) -> i64 {
    if bottleneck {
        width * 4
    } else {
        width
    }
}

/// A convolution followed by its batch norm (inference statistics).
#[derive(Debug)]
struct ConvNorm {
    conv: nn::Conv2D,
    norm: nn::BatchNorm,
}

impl ConvNorm {
    fn new(p: &nn::Path, names: (&str, &str), c_in: i64, c_out: i64, ksize: i64, stride: i64) -> ConvNorm {
        let config = nn::ConvConfig { stride, padding: ksize / 2, bias: false, ..Default::default() };
        ConvNorm {
            conv: layers::conv2d(p / names.0, c_in, c_out, ksize, config),
            norm: layers::batch_norm2d(p / names.1, c_out, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.conv).apply_t(&self.norm, false)
    }
}

/// A residual block: `basic` (two 3x3) or `bottleneck` (1x1, 3x3 with the stride, 1x1 to four
/// times the width), with `downsample.0/1` where the shape changes.
#[derive(Debug)]
struct Block {
    convs: Vec<ConvNorm>,
    downsample: Option<ConvNorm>,
}

impl Block {
    fn new(p: &nn::Path, c_in: i64, width: i64, stride: i64, bottleneck: bool) -> Block {
        let c_out = block_out(width, bottleneck);
        let convs = if bottleneck {
            vec![
                ConvNorm::new(p, ("conv1", "bn1"), c_in, width, 1, 1),
                ConvNorm::new(p, ("conv2", "bn2"), width, width, 3, stride),
                ConvNorm::new(p, ("conv3", "bn3"), width, c_out, 1, 1),
            ]
        } else {
            vec![
                ConvNorm::new(p, ("conv1", "bn1"), c_in, width, 3, stride),
                ConvNorm::new(p, ("conv2", "bn2"), width, width, 3, 1),
            ]
        };
        let downsample = (stride != 1 || c_in != c_out)
            .then(|| ConvNorm::new(&(p / "downsample"), ("0", "1"), c_in, c_out, 1, stride));
        Block { convs, downsample }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (last, first) = self.convs.split_last().expect("a block has convolutions");
        let mut y = x.shallow_clone();
        for conv in first {
            y = conv.forward(&y);
            let _ = y.relu_();
        }
        let mut y = last.forward(&y);
        let _ = match &self.downsample {
            Some(downsample) => y.g_add_(&downsample.forward(x)),
            None => y.g_add_(x),
        };
        let _ = y.relu_();
        y
    }
}

/// The stem, four layers of blocks, and the global average pool: (B, 3, H, W) to (B, 512 or
/// 2048).
#[derive(Debug)]
struct ResNetFeatures {
    stem: ConvNorm,
    blocks: Vec<Block>,
}

impl ResNetFeatures {
    fn new(p: &nn::Path, blocks: [i64; 4], bottleneck: bool) -> ResNetFeatures {
        let stem = ConvNorm::new(p, ("conv1", "bn1"), 3, 64, 7, 2);
        let mut layers = Vec::new();
        let mut c_in = 64;
        for (i, (&count, width)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
            let layer = p / format!("layer{}", i + 1);
            for b in 0..count {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                layers.push(Block::new(&(&layer / b.to_string()), c_in, width, stride, bottleneck));
                c_in = block_out(width, bottleneck);
            }
        }
        ResNetFeatures { stem, blocks: layers }
    }
}

impl ModuleT for ResNetFeatures {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let mut x = self.stem.forward(x);
        let _ = x.relu_();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            x = block.forward(&x);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

//! ResNet-18/34/50/101/152 (torchvision's layout: stride on the 3x3 convolution of bottleneck
//! blocks, "ResNet v1.5"), without the final `fc`: the output is the 512 or 2048 pooled features,
//! in every use case.

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn;
use tch::vision::resnet;

use super::{Backbone, Family, Registration, Version};
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
        let module: Box<dyn nn::ModuleT> = match version.name {
            "resnet18" => Box::new(resnet::resnet18_no_final_layer(p)),
            "resnet34" => Box::new(resnet::resnet34_no_final_layer(p)),
            "resnet50" => Box::new(resnet::resnet50_no_final_layer(p)),
            "resnet101" => Box::new(resnet::resnet101_no_final_layer(p)),
            // tch calls the 152-layer variant "resnet150"; the block counts (3, 8, 36, 3) are
            // ResNet-152's.
            _ => Box::new(resnet::resnet150_no_final_layer(p)),
        };
        Ok(Backbone { module, transform: Transform::IMAGENET })
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

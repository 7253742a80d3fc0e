//! ResNet-18/34/50/101/152 (torchvision's layout: stride on the 3x3 convolution of bottleneck
//! blocks, "ResNet v1.5"), without the final `fc`: the output is the 512 or 2048 pooled features.

use super::Architecture;

pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        version: "resnet18",
        features: 512,
        hub_file: "resnet18-f37072fd.pth",
        build: |p| Box::new(tch::vision::resnet::resnet18_no_final_layer(p)),
    },
    Architecture {
        version: "resnet34",
        features: 512,
        hub_file: "resnet34-b627a593.pth",
        build: |p| Box::new(tch::vision::resnet::resnet34_no_final_layer(p)),
    },
    Architecture {
        version: "resnet50",
        features: 2048,
        hub_file: "resnet50-0676ba61.pth",
        build: |p| Box::new(tch::vision::resnet::resnet50_no_final_layer(p)),
    },
    Architecture {
        version: "resnet101",
        features: 2048,
        hub_file: "resnet101-63fe2227.pth",
        build: |p| Box::new(tch::vision::resnet::resnet101_no_final_layer(p)),
    },
    // tch calls the 152-layer variant "resnet150"; the block counts (3, 8, 36, 3) are ResNet-152's.
    Architecture {
        version: "resnet152",
        features: 2048,
        hub_file: "resnet152-394f9c45.pth",
        build: |p| Box::new(tch::vision::resnet::resnet150_no_final_layer(p)),
    },
];

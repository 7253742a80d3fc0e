//! Vision Transformers vit_b_16, vit_b_32, vit_l_16, vit_l_32 and vit_h_14, as torchvision builds
//! them (`VisionTransformer`: patch convolution, class token, learned position embedding,
//! pre-norm encoder blocks, final LayerNorm), without `heads`: the output is the class token
//! after the final LayerNorm (768, 1024 or 1280 wide) in every use case.
//!
//! The input size follows the weights: the position embedding holds one token per patch plus
//! the class token, so its length fixes the image size (224 for the ImageNet-1K weights, 518
//! for vit_h_14's default SWAG weights). Images are resized to that size with DeepTune's
//! transform (bilinear, ImageNet mean/std, no crop). The depth follows the weights too: widths,
//! patch and heads are the version's, so weights of another registered version still fail to
//! load (and are named), while a shallower model of the same layout runs.

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn;
use tch::Tensor;

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct ViT;

inventory::submit! { Registration(&ViT) }

/// torchvision's constructor arguments of one version.
struct Config {
    name: &'static str,
    patch: i64,
    layers: i64,
    heads: i64,
    hidden: i64,
    mlp: i64,
    /// The image size of the weights DeepTune uses (torchvision's DEFAULT), when the weights do
    /// not say.
    size: i64,
}

const CONFIGS: &[Config] = &[
    Config { name: "vit_b_16", patch: 16, layers: 12, heads: 12, hidden: 768, mlp: 3072, size: 224 },
    Config { name: "vit_b_32", patch: 32, layers: 12, heads: 12, hidden: 768, mlp: 3072, size: 224 },
    Config { name: "vit_l_16", patch: 16, layers: 24, heads: 16, hidden: 1024, mlp: 4096, size: 224 },
    Config { name: "vit_l_32", patch: 32, layers: 24, heads: 16, hidden: 1024, mlp: 4096, size: 224 },
    // DEFAULT is IMAGENET1K_SWAG_E2E_V1, trained at 518x518.
    Config { name: "vit_h_14", patch: 14, layers: 32, heads: 16, hidden: 1280, mlp: 5120, size: 518 },
];

const fn version(name: &'static str, hub_file: &'static str, features: i64) -> Version {
    Version { name, hub_file, features, pretrained: Some(features) }
}

/// The hub files of torchvision's DEFAULT weights, which DeepTune loads.
const VERSIONS: &[Version] = &[
    version("vit_b_16", "vit_b_16-c867db91.pth", 768),
    version("vit_b_32", "vit_b_32-d86f8d99.pth", 768),
    version("vit_l_16", "vit_l_16-852ce7e3.pth", 1024),
    version("vit_l_32", "vit_l_32-c7638314.pth", 1024),
    version("vit_h_14", "vit_h_14_swag-80465313.pth", 1280),
];

/// torchvision uses LayerNorm(eps=1e-6) throughout.
const LN_EPS: f64 = 1e-6;

fn config(name: &str) -> &'static Config {
    CONFIGS.iter().find(|c| c.name == name).unwrap_or(&CONFIGS[0])
}

/// The image size the weights were made for: `(tokens - 1) = (size / patch)^2`. None when the
/// position embedding is missing or not a square grid (copy_into then reports the mismatch).
fn image_size(weights: &StateDict, patch: i64) -> Option<i64> {
    let shape = weights.shape("encoder.pos_embedding")?;
    let patches = *shape.get(1)? - 1;
    let grid = (patches.max(0) as f64).sqrt().round() as i64;
    (grid > 0 && grid * grid == patches).then_some(grid * patch)
}

/// How many encoder layers the weights hold.
fn layer_count(weights: &StateDict) -> i64 {
    (0..).take_while(|i| weights.contains(&format!("encoder.layers.encoder_layer_{i}.ln_1.weight"))).count() as i64
}

#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(p: nn::Path, inputs: i64, outputs: i64) -> Linear {
        Linear { weight: layers::var(&p, "weight", &[outputs, inputs]), bias: layers::var(&p, "bias", &[outputs]) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(p: nn::Path, width: i64) -> LayerNorm {
        LayerNorm { weight: layers::var(&p, "weight", &[width]), bias: layers::var(&p, "bias", &[width]) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        x.layer_norm([width], Some(&self.weight), Some(&self.bias), LN_EPS, true)
    }
}

/// nn.MultiheadAttention (batch first) used as self-attention: one packed q/k/v projection,
/// softmax(q k^T / sqrt(head_dim)) v per head, then `out_proj`.
#[derive(Debug)]
struct SelfAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: Linear,
    heads: i64,
}

impl SelfAttention {
    fn new(p: nn::Path, hidden: i64, heads: i64) -> SelfAttention {
        SelfAttention {
            in_proj_weight: layers::var(&p, "in_proj_weight", &[3 * hidden, hidden]),
            in_proj_bias: layers::var(&p, "in_proj_bias", &[3 * hidden]),
            out_proj: Linear::new(&p / "out_proj", hidden, hidden),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().expect("tokens are (batch, tokens, hidden)");
        // (B, T, 3D) -> (3, B, heads, T, head_dim): q, k, v in that order, as torch splits them.
        let qkv = x
            .linear(&self.in_proj_weight, Some(&self.in_proj_bias))
            .view([b, t, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let attended = Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.out_proj.forward(&attended.transpose(1, 2).reshape([b, t, d]))
    }
}

/// torchvision's EncoderBlock: x + attention(ln_1(x)), then + mlp(ln_2(.)); mlp is
/// Linear (`mlp.0`), exact GELU, Linear (`mlp.3`) (dropouts are identities in eval).
#[derive(Debug)]
struct EncoderBlock {
    ln_1: LayerNorm,
    self_attention: SelfAttention,
    ln_2: LayerNorm,
    mlp_0: Linear,
    mlp_3: Linear,
}

impl EncoderBlock {
    fn new(p: nn::Path, c: &Config) -> EncoderBlock {
        let mlp = &p / "mlp";
        EncoderBlock {
            ln_1: LayerNorm::new(&p / "ln_1", c.hidden),
            self_attention: SelfAttention::new(&p / "self_attention", c.hidden, c.heads),
            ln_2: LayerNorm::new(&p / "ln_2", c.hidden),
            mlp_0: Linear::new(&mlp / "0", c.hidden, c.mlp),
            mlp_3: Linear::new(&mlp / "3", c.mlp, c.hidden),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.self_attention.forward(&self.ln_1.forward(x));
        let y = self.mlp_3.forward(&self.mlp_0.forward(&self.ln_2.forward(&x)).gelu("none"));
        x + y
    }
}

#[derive(Debug)]
struct VisionTransformer {
    conv_proj_weight: Tensor,
    conv_proj_bias: Tensor,
    patch: i64,
    class_token: Tensor,
    pos_embedding: Tensor,
    layers: Vec<EncoderBlock>,
    ln: LayerNorm,
}

impl VisionTransformer {
    fn new(p: &nn::Path, c: &Config, size: i64, depth: i64) -> VisionTransformer {
        let conv = p / "conv_proj";
        let encoder = p / "encoder";
        let blocks = &encoder / "layers";
        let tokens = (size / c.patch).pow(2) + 1;
        VisionTransformer {
            conv_proj_weight: layers::var(&conv, "weight", &[c.hidden, 3, c.patch, c.patch]),
            conv_proj_bias: layers::var(&conv, "bias", &[c.hidden]),
            patch: c.patch,
            class_token: layers::var(p, "class_token", &[1, 1, c.hidden]),
            pos_embedding: layers::var(&encoder, "pos_embedding", &[1, tokens, c.hidden]),
            layers: (0..depth).map(|i| EncoderBlock::new(&blocks / format!("encoder_layer_{i}"), c)).collect(),
            ln: LayerNorm::new(&encoder / "ln", c.hidden),
        }
    }
}

impl nn::ModuleT for VisionTransformer {
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        let n = images.size()[0];
        // Patches (B, hidden, h, w) -> tokens (B, h*w, hidden), row-major as torchvision.
        let patches = images.conv2d(
            &self.conv_proj_weight,
            Some(&self.conv_proj_bias),
            [self.patch, self.patch],
            [0, 0],
            [1, 1],
            1,
        );
        let tokens = patches.flatten(2, 3).transpose(1, 2);
        let class = self.class_token.expand([n, -1, -1], false);
        let mut x = Tensor::cat(&[class, tokens], 1) + &self.pos_embedding;
        for layer in &self.layers {
            x = layer.forward(&x);
        }
        self.ln.forward(&x).select(1, 0)
    }
}

impl Family for ViT {
    fn name(&self) -> &'static str {
        "vit"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn build(&self, version: &Version, _: UseCase, weights: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let c = config(version.name);
        let size = image_size(weights, c.patch).unwrap_or(c.size);
        let depth = match layer_count(weights) {
            0 => c.layers,
            n => n,
        };
        let module = Box::new(VisionTransformer::new(p, c, size, depth));
        Ok(Backbone { module, transform: Transform::imagenet(size as usize) })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        let conv = weights.shape("conv_proj.weight")?;
        if !weights.contains("encoder.pos_embedding") || conv.len() != 4 {
            return None;
        }
        let layers = layer_count(weights);
        CONFIGS.iter().find(|c| c.hidden == conv[0] && c.patch == conv[2] && c.layers == layers).map(|c| c.name)
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        // torchvision's classifier (`heads.head`); DeepTune replaces it by an identity.
        key.starts_with("heads.")
    }
}

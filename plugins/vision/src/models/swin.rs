//! Swin Transformer V1 (swin_t, swin_s, swin_b) as torchvision 0.26 builds it: 4x4 patch
//! embedding, stages of blocks with (shifted) window attention and a relative position bias,
//! PatchMerging between stages, the final LayerNorm, then average pooling over the grid. The
//! output is the head's input (768 or 1024 features), in every use case: DeepTune replaces
//! `head` by an identity.
//!
//! The block counts, window size, head counts and MLP widths are read from the weights (they are
//! torchvision's constructor arguments, which small test fixtures change); weights of another
//! known Swin version than the one asked for are refused.

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::nn;
use tch::{Device, Kind, Tensor};

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::Transform;

pub struct Swin;

inventory::submit! { Registration(&Swin) }

const fn version(name: &'static str, hub_file: &'static str, features: i64) -> Version {
    Version { name, hub_file, features, pretrained: Some(features) }
}

// torchvision's Swin_{T,S,B}_Weights.IMAGENET1K_V1 files. DeepTune builds pretrained swin_s and
// swin_b with Swin_T_Weights (which fails in torchvision); we use each version's own file.
const VERSIONS: &[Version] = &[
    version("swin_t", "swin_t-704ceda3.pth", 768),
    version("swin_s", "swin_s-5e29d889.pth", 768),
    version("swin_b", "swin_b-68c6b09e.pth", 1024),
];

/// torchvision's (embed_dim, blocks per stage) of each version, to recognise them.
const CONFIGS: &[(&str, i64, &[usize])] =
    &[("swin_t", 96, &[2, 2, 6, 2]), ("swin_s", 96, &[2, 2, 18, 2]), ("swin_b", 128, &[2, 2, 18, 2])];

/// torchvision's norm_layer for Swin V1: `partial(nn.LayerNorm, eps=1e-5)`.
const EPS: f64 = 1e-5;

impl Family for Swin {
    fn name(&self) -> &'static str {
        "swin"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    fn build(&self, version: &Version, _: UseCase, weights: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let arch = Arch::read(weights)
            .map_err(|e| crate::weights::wrong_model(e, weights, version, &format!("cannot build {}", version.name)))?;
        if let Some(found) = arch.known() {
            if found != version.name {
                bail!("--model_version is {} but the weights are a {found}", version.name);
            }
        }
        if arch.width() != version.features {
            bail!(
                "the weights end in {} features, but {} has {}: they are not a {}",
                arch.width(),
                version.name,
                version.features,
                version.name
            );
        }
        let module = SwinTransformer::new(p, &arch, weights)?;
        Ok(Backbone { module: Box::new(module), transform: Transform::IMAGENET })
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        Arch::read(weights).ok()?.known()
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        // The index is a persistent buffer in torchvision's state dict; we compute it (and check
        // it against the file's in `build`). `head` is torchvision's classifier (DeepTune
        // replaces it by an identity).
        key.ends_with(".attn.relative_position_index") || key.starts_with("head.")
    }
}

/// The shape of a Swin network, from its weights.
struct Arch {
    embed_dim: i64,
    patch: i64,
    /// Per stage, per block: (heads, window, MLP hidden width).
    stages: Vec<Vec<(i64, i64, i64)>>,
}

impl Arch {
    fn read(w: &StateDict) -> Result<Arch> {
        let shape = |key: &str| w.shape(key).ok_or_else(|| anyhow!("the weights have no {key}"));
        let conv = shape("features.0.0.weight")?;
        if conv.len() != 4 || conv[1] != 3 || conv[2] != conv[3] {
            bail!("features.0.0.weight has shape {conv:?}, not a square patch embedding of RGB images");
        }
        if w.keys().any(|k| k.contains(".attn.cpb_mlp.")) {
            bail!("the weights are a Swin V2 (attn.cpb_mlp), which is not a supported version");
        }
        // Stage i sits at features.{2i+1}; a PatchMerging at features.{2i+2} follows every
        // stage but the last.
        let mut count = 1;
        while w.contains(&format!("features.{}.reduction.weight", 2 * count)) {
            count += 1;
        }
        let mut stages = Vec::new();
        for stage in 0..count {
            let mut blocks = Vec::new();
            while w.contains(&format!("features.{}.{}.norm1.weight", 2 * stage + 1, blocks.len())) {
                let at = format!("features.{}.{}", 2 * stage + 1, blocks.len());
                let table = shape(&format!("{at}.attn.relative_position_bias_table"))?;
                let window = window_of(table[0])
                    .ok_or_else(|| anyhow!("{at}.attn.relative_position_bias_table has shape {table:?}"))?;
                let hidden = shape(&format!("{at}.mlp.0.weight"))?[0];
                blocks.push((table[1], window, hidden));
            }
            stages.push(blocks);
        }
        if stages.iter().all(Vec::is_empty) {
            bail!("the weights have no Swin blocks (features.1.0.norm1.weight)");
        }
        Ok(Arch { embed_dim: conv[0], patch: conv[2], stages })
    }

    /// Width of the pooled features: the channels double at every PatchMerging.
    fn width(&self) -> i64 {
        self.embed_dim << (self.stages.len() - 1)
    }

    /// The torchvision version these weights are, if they are one.
    fn known(&self) -> Option<&'static str> {
        let depths: Vec<usize> = self.stages.iter().map(Vec::len).collect();
        let standard = self.patch == 4 && self.stages.iter().flatten().all(|&(_, window, _)| window == 7);
        CONFIGS
            .iter()
            .find(|(_, embed, d)| standard && *embed == self.embed_dim && depths == *d)
            .map(|(name, _, _)| *name)
    }
}

/// The window size whose bias table has `rows` = (2w-1)^2 rows.
fn window_of(rows: i64) -> Option<i64> {
    let side = (rows as f64).sqrt().round() as i64;
    (side * side == rows && side % 2 == 1).then_some((side + 1) / 2)
}

#[derive(Debug)]
struct SwinTransformer {
    /// features.0: Conv2d(3, C, patch, stride patch), permute to (B, H, W, C), LayerNorm.
    patch_embed: nn::Conv2D,
    patch_norm: nn::LayerNorm,
    /// Each stage's blocks and the PatchMerging after it (none after the last).
    stages: Vec<(Vec<Block>, Option<PatchMerging>)>,
    norm: nn::LayerNorm,
}

fn layer_norm(p: nn::Path, width: i64) -> nn::LayerNorm {
    layers::layer_norm(p, vec![width], nn::LayerNormConfig { eps: EPS, ..Default::default() })
}

impl SwinTransformer {
    fn new(p: &nn::Path, arch: &Arch, weights: &StateDict) -> Result<SwinTransformer> {
        let f = p / "features";
        let c = arch.embed_dim;
        let patch_embed =
            layers::conv2d(&f / 0 / 0, 3, c, arch.patch, nn::ConvConfig { stride: arch.patch, ..Default::default() });
        let patch_norm = layer_norm(&f / 0 / 2, c);
        let mut stages = Vec::new();
        for (i, blocks) in arch.stages.iter().enumerate() {
            let dim = c << i;
            let stage = &f / (2 * i + 1);
            let mut built = Vec::new();
            for (j, &(heads, window, hidden)) in blocks.iter().enumerate() {
                if dim % heads != 0 {
                    bail!("features.{}.{j}: {heads} heads do not divide {dim} channels", 2 * i + 1);
                }
                // torchvision shifts every second block by half a window.
                let shift = if j % 2 == 0 { 0 } else { window / 2 };
                let block = Block::new(&stage / j, dim, heads, window, shift, hidden);
                block.attn.check_index(weights, &format!("features.{}.{j}.attn.relative_position_index", 2 * i + 1))?;
                built.push(block);
            }
            let merge = (i + 1 < arch.stages.len()).then(|| PatchMerging::new(&f / (2 * i + 2), dim));
            stages.push((built, merge));
        }
        let norm = layer_norm(p / "norm", arch.width());
        Ok(SwinTransformer { patch_embed, patch_norm, stages, norm })
    }
}

impl nn::ModuleT for SwinTransformer {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut x = xs.apply(&self.patch_embed).permute([0, 2, 3, 1]).apply(&self.patch_norm);
        for (blocks, merge) in &self.stages {
            for block in blocks {
                x = block.forward(&x);
            }
            if let Some(merge) = merge {
                x = merge.forward(&x);
            }
        }
        // norm, permute to (B, C, H, W), AdaptiveAvgPool2d(1), flatten.
        x.apply(&self.norm).permute([0, 3, 1, 2]).adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

/// Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); stochastic depth and dropout are
/// identities in eval mode.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: WindowAttention,
    norm2: nn::LayerNorm,
    /// MLP: mlp.0 Linear, GELU (exact), Dropout, mlp.3 Linear, Dropout.
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Block {
    fn new(p: nn::Path, dim: i64, heads: i64, window: i64, shift: i64, hidden: i64) -> Block {
        Block {
            norm1: layer_norm(&p / "norm1", dim),
            attn: WindowAttention::new(&p / "attn", dim, heads, window, shift),
            norm2: layer_norm(&p / "norm2", dim),
            fc1: layers::linear(&p / "mlp" / 0, dim, hidden, Default::default()),
            fc2: layers::linear(&p / "mlp" / 3, hidden, dim, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attn.forward(&x.apply(&self.norm1));
        let mlp = x.apply(&self.norm2).apply(&self.fc1).gelu("none").apply(&self.fc2);
        x + mlp
    }
}

/// torchvision's ShiftedWindowAttention (V1).
#[derive(Debug)]
struct WindowAttention {
    qkv: nn::Linear,
    proj: nn::Linear,
    /// ((2w-1)^2, heads): one learned bias per relative offset and head.
    table: Tensor,
    /// (w^2 * w^2): the table row of each (query, key) pair in a window; computed, as
    /// torchvision's `define_relative_position_index` does.
    index: Tensor,
    heads: i64,
    window: i64,
    shift: i64,
}

impl WindowAttention {
    fn new(p: nn::Path, dim: i64, heads: i64, window: i64, shift: i64) -> WindowAttention {
        let rows = (2 * window - 1) * (2 * window - 1);
        WindowAttention {
            qkv: layers::linear(&p / "qkv", dim, 3 * dim, Default::default()),
            proj: layers::linear(&p / "proj", dim, dim, Default::default()),
            table: layers::var(&p, "relative_position_bias_table", &[rows, heads]),
            index: relative_position_index(window).to_device(p.device()),
            heads,
            window,
            shift,
        }
    }

    /// Fails when the file holds a relative_position_index other than the one computed.
    fn check_index(&self, weights: &StateDict, key: &str) -> Result<()> {
        let Some(stored) = weights.get(key)? else { return Ok(()) };
        let ours = self.index.to_device(Device::Cpu);
        let same =
            stored.size() == ours.size() && stored.to_kind(Kind::Int64).eq_tensor(&ours).all().int64_value(&[]) == 1;
        if !same {
            bail!("{key} in the weights is not torchvision's index for a {0}x{0} window", self.window);
        }
        Ok(())
    }

    /// (B, H, W, C) to (B, H, W, C).
    fn forward(&self, input: &Tensor) -> Tensor {
        let (b, h, w, c) = input.size4().expect("Swin attention input is (B, H, W, C)");
        let win = self.window;
        // Pad (zeros, after the norm) to whole windows on the bottom and right.
        let pad_r = (win - w % win) % win;
        let pad_b = (win - h % win) % win;
        let x = if pad_r > 0 || pad_b > 0 {
            input.constant_pad_nd([0, 0, 0, pad_r, 0, pad_b])
        } else {
            input.shallow_clone()
        };
        let (ph, pw) = (h + pad_b, w + pad_r);
        // torchvision does not shift along a side the window already covers.
        let sh = if win >= ph { 0 } else { self.shift };
        let sw = if win >= pw { 0 } else { self.shift };
        let shifted = sh + sw > 0;
        let x = if shifted { x.roll([-sh, -sw], [1, 2]) } else { x };

        // Partition into windows: (B * nW, w*w, C).
        let (nh, nw) = (ph / win, pw / win);
        let windows = nh * nw;
        let n = win * win;
        let x = x.view([b, nh, win, nw, win, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b * windows, n, c]);

        let head_dim = c / self.heads;
        let qkv = x.apply(&self.qkv).reshape([b * windows, n, 3, self.heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let q = q * (head_dim as f64).powf(-0.5);
        let bias = self.table.index_select(0, &self.index).view([n, n, -1]).permute([2, 0, 1]).unsqueeze(0);
        let mut attn = q.matmul(&k.transpose(-2, -1)) + bias;
        if shifted {
            let mask = shift_mask(ph, pw, win, sh, sw).to_device(attn.device()).to_kind(attn.kind());
            attn = (attn.view([b, windows, self.heads, n, n]) + mask.unsqueeze(1).unsqueeze(0))
                .view([-1, self.heads, n, n]);
        }
        let attn = attn.softmax(-1, attn.kind());
        let x = attn.matmul(&v).transpose(1, 2).reshape([b * windows, n, c]).apply(&self.proj);

        // Reverse the partition and the shift, drop the padding.
        let x = x.view([b, nh, nw, win, win, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, ph, pw, c]);
        let x = if shifted { x.roll([sh, sw], [1, 2]) } else { x };
        x.narrow(1, 0, h).narrow(2, 0, w).contiguous()
    }
}

/// torchvision's relative_position_index for a w x w window: for tokens i, j (row-major),
/// (dy + w - 1) * (2w - 1) + (dx + w - 1) with (dy, dx) = position(i) - position(j).
fn relative_position_index(w: i64) -> Tensor {
    let n = w * w;
    let index: Vec<i64> = (0..n * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            let dy = i / w - j / w + w - 1;
            let dx = i % w - j % w + w - 1;
            dy * (2 * w - 1) + dx
        })
        .collect();
    Tensor::from_slice(&index)
}

/// The attention mask of shifted windows, (nW, w*w, w*w): after the cyclic shift a window may
/// hold tokens from up to three regions per side that were not neighbours; pairs from different
/// regions get -100, as in torchvision.
fn shift_mask(ph: i64, pw: i64, win: i64, sh: i64, sw: i64) -> Tensor {
    // Region along one side of length `len` shifted by `s`: [0, len-w), [len-w, len-s),
    // [len-s, len). With no shift along a side, torchvision's last slice `[-0:]` covers it all:
    // one region.
    let region = |pos: i64, len: i64, s: i64| -> i64 {
        if s == 0 || pos >= len - s {
            2
        } else if pos >= len - win {
            1
        } else {
            0
        }
    };
    let ids: Vec<f32> = (0..ph * pw).map(|ij| (region(ij / pw, ph, sh) * 3 + region(ij % pw, pw, sw)) as f32).collect();
    let (nh, nw) = (ph / win, pw / win);
    let ids = Tensor::from_slice(&ids).view([nh, win, nw, win]).permute([0, 2, 1, 3]).reshape([nh * nw, win * win]);
    let diff = ids.unsqueeze(1) - ids.unsqueeze(2);
    diff.ne(0.0).to_kind(Kind::Float) * -100.0
}

/// PatchMerging: pad H and W to even, concatenate the 2x2 neighbours in torchvision's order
/// (x0 = even row/even col, x1 = odd/even, x2 = even/odd, x3 = odd/odd), LayerNorm(4C), then
/// reduction Linear(4C, 2C) without bias.
#[derive(Debug)]
struct PatchMerging {
    norm: nn::LayerNorm,
    reduction: nn::Linear,
}

impl PatchMerging {
    fn new(p: nn::Path, dim: i64) -> PatchMerging {
        PatchMerging {
            norm: layer_norm(&p / "norm", 4 * dim),
            reduction: layers::linear(
                &p / "reduction",
                4 * dim,
                2 * dim,
                nn::LinearConfig { bias: false, ..Default::default() },
            ),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (_, h, w, _) = x.size4().expect("PatchMerging input is (B, H, W, C)");
        let x =
            if h % 2 == 1 || w % 2 == 1 { x.constant_pad_nd([0, 0, 0, w % 2, 0, h % 2]) } else { x.shallow_clone() };
        let part = |row: i64, col: i64| x.slice(1, row, None, 2).slice(2, col, None, 2);
        Tensor::cat(&[part(0, 0), part(1, 0), part(0, 1), part(1, 1)], -1).apply(&self.norm).apply(&self.reduction)
    }
}

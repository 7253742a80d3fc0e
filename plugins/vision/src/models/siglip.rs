//! SigLIP (`--model_version siglip`): the Hugging Face SigLIP vision tower's pooled output (its
//! attention-pooling head), in fp32; 1152 wide for google/siglip-so400m-patch14-384.
//!
//! - pretrained: a Hugging Face directory (`save_pretrained` of a `SiglipVisionModel` or a whole
//!   `SiglipModel`), weights in model.safetensors or pytorch_model.bin; names with or without the
//!   `vision_model.` prefix (transformers 4 nests a vision model's weights under it, 5 does not).
//! - finetuned / peft: DeepTune's `custom_siglip_model.pt` (`torch.save` of its
//!   CustomSiglipModel): the SiglipModel under `base_model.` (peft: `base_model.base_model.model.`,
//!   LoRA r 16, alpha 32 on q_proj and v_proj), then `fc_layers.0` (and `fc_layers.1`). The
//!   embedding is `fc_layers[0]` on the pooled output, so only two added layers give one.
//!   DeepTune reads the base model's shape from a fixed download path; here it is the
//!   config.json beside the checkpoint, else so400m-patch14-384's published shape.
//!
//! Preprocessing is SigLIP's processor as transformers 4.41 (DeepTune's pin) runs it: Pillow
//! bicubic resize to `preprocessor_config.json`'s size, x / 255, then (x - 0.5) / 0.5.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::activation::Activation;
use deepembed_sdk::checkpoint::{Checkpoint, StateDict};
use deepembed_sdk::options::UseCase;
use serde_json::Value;
use tch::nn::{self, Module};
use tch::{Device, Tensor};

use super::{layers, Backbone, Family, Registration, Version};
use crate::image::{Filter, Transform};
use crate::model::EmbeddingModel;
use crate::options::VisionOptions;
use crate::weights::{self, Head, HeadLayout};

pub struct Siglip;

inventory::submit! { Registration(&Siglip) }

const VERSIONS: &[Version] =
    &[Version { name: "siglip", hub_file: "", features: VisionConfig::SO400M.hidden_size, pretrained: Some(1152) }];

/// DeepTune's LoRA alpha for SigLIP (the checkpoint does not record it).
pub const DEEPTUNE_LORA_ALPHA: f64 = 32.0;

/// The vision tower's shape: a config.json's `vision_config` (or the whole file for a
/// `SiglipVisionModel`).
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_channels: i64,
    pub image_size: i64,
    pub patch_size: i64,
    pub layer_norm_eps: f64,
    /// `hidden_act`: `gelu_pytorch_tanh` for SigLIP.
    pub activation: Activation,
    pub use_head: bool,
}

impl VisionConfig {
    /// google/siglip-so400m-patch14-384, the model DeepTune downloads.
    pub const SO400M: VisionConfig = VisionConfig {
        hidden_size: 1152,
        intermediate_size: 4304,
        num_hidden_layers: 27,
        num_attention_heads: 16,
        num_channels: 3,
        image_size: 384,
        patch_size: 14,
        layer_norm_eps: 1e-6,
        activation: Activation::GeluTanh,
        use_head: true,
    };

    /// transformers' SiglipVisionConfig defaults, for keys a config.json leaves out.
    const DEFAULTS: VisionConfig = VisionConfig {
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        num_channels: 3,
        image_size: 224,
        patch_size: 16,
        layer_norm_eps: 1e-6,
        activation: Activation::GeluTanh,
        use_head: true,
    };

    /// From a parsed config.json (of a SiglipModel or a SiglipVisionModel).
    pub fn from_json(json: &Value, source: &Path) -> Result<VisionConfig> {
        let v = json.get("vision_config").unwrap_or(json);
        let d = VisionConfig::DEFAULTS;
        let int = |key: &str, default: i64| -> Result<i64> {
            match v.get(key) {
                None | Some(Value::Null) => Some(default),
                Some(Value::Number(n)) => n.as_i64().filter(|&n| n > 0),
                // image_size and patch_size may be [height, width]; SigLIP's are square.
                Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => a[0].as_i64().filter(|&n| n > 0),
                Some(_) => None,
            }
            .ok_or_else(|| anyhow!("{}: {key} is {}, expected a positive integer", source.display(), v[key]))
        };
        let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu_pytorch_tanh");
        let activation = Activation::from_config(act, "hidden_act").with_context(|| source.display().to_string())?;
        let config = VisionConfig {
            hidden_size: int("hidden_size", d.hidden_size)?,
            intermediate_size: int("intermediate_size", d.intermediate_size)?,
            num_hidden_layers: int("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: int("num_attention_heads", d.num_attention_heads)?,
            num_channels: int("num_channels", d.num_channels)?,
            image_size: int("image_size", d.image_size)?,
            patch_size: int("patch_size", d.patch_size)?,
            layer_norm_eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(d.layer_norm_eps),
            activation,
            use_head: v.get("vision_use_head").and_then(Value::as_bool).unwrap_or(true),
        };
        config.check(source)?;
        Ok(config)
    }

    pub fn read(path: &Path) -> Result<VisionConfig> {
        VisionConfig::from_json(&read_json(path)?, path)
    }

    /// The shape a state dict's tensors imply (SigLIP names, no prefix). The head count and the
    /// input size are not in the weights: heads are taken as so400m's width (72), the input as
    /// the patch grid's extent.
    pub fn from_weights(sd: &StateDict) -> Result<VisionConfig> {
        let shape = |key: &str| sd.shape(key).ok_or_else(|| anyhow!("{} has no {key}", sd.source().display()));
        let patch = shape("embeddings.patch_embedding.weight")?;
        let positions = shape("embeddings.position_embedding.weight")?;
        let fc1 = shape("encoder.layers.0.mlp.fc1.weight")?;
        let (hidden, patch_size) = (patch[0], patch[patch.len() - 1]);
        let side = (positions[0] as f64).sqrt().round() as i64;
        let so400m = VisionConfig::SO400M;
        let head_width = so400m.hidden_size / so400m.num_attention_heads;
        if hidden % head_width != 0 {
            bail!("{}: the head count of a {hidden}-wide SigLIP needs its config.json", sd.source().display());
        }
        Ok(VisionConfig {
            hidden_size: hidden,
            intermediate_size: fc1[0],
            num_hidden_layers: (0..).take_while(|i| sd.contains(&layer_key(*i))).count() as i64,
            num_attention_heads: hidden / head_width,
            num_channels: patch[1],
            image_size: side * patch_size,
            patch_size,
            use_head: sd.contains("head.probe"),
            ..so400m
        })
    }

    fn check(&self, source: &Path) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            bail!(
                "{}: hidden_size {} is not a multiple of num_attention_heads {}",
                source.display(),
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !self.use_head {
            bail!(
                "{}: vision_use_head is false: the model has no pooling head, so no pooled output to embed",
                source.display()
            );
        }
        Ok(())
    }

    /// SigLIP's processor when no preprocessor_config.json is found: the model's input size,
    /// bicubic, mean = std = 0.5.
    fn default_transform(&self) -> Transform {
        Transform { size: self.image_size as usize, filter: Filter::Bicubic, mean: [0.5; 3], std: [0.5; 3] }
    }
}

/// Whether a weight is outside a whole SigLIP model's text tower (which the embedding never uses;
/// for so400m it is about 1.6 GB).
fn not_text_tower(key: &str) -> bool {
    !key.starts_with("text_model.") && !key.contains(".text_model.")
}

fn layer_key(i: i64) -> String {
    format!("encoder.layers.{i}.layer_norm1.weight")
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The preprocessing a `preprocessor_config.json` describes (SigLIP's processor: resize to
/// `size.height` x `size.width`, rescale, normalize).
pub fn read_preprocessor(path: &Path) -> Result<Transform> {
    let json = read_json(path)?;
    let source = path.display();
    let flag = |key: &str| json.get(key).and_then(Value::as_bool).unwrap_or(true);
    for key in ["do_resize", "do_rescale", "do_normalize"] {
        if !flag(key) {
            bail!("{source}: {key} is false; SigLIP's preprocessing resizes, rescales and normalizes");
        }
    }
    let size = &json["size"];
    let side = |key: &str| size.get(key).and_then(Value::as_u64).filter(|&s| s > 0);
    let (height, width) = match (side("height"), side("width")) {
        (Some(h), Some(w)) => (h, w),
        _ => bail!("{source}: size is {size}, expected {{\"height\": H, \"width\": W}}"),
    };
    if height != width {
        bail!("{source}: size {height}x{width} is not square, which SigLIP's input always is");
    }
    let filter = match json.get("resample").and_then(Value::as_i64).unwrap_or(3) {
        3 => Filter::Bicubic,
        2 => Filter::Bilinear,
        other => bail!("{source}: resample {other} is not supported (2 bilinear, 3 bicubic)"),
    };
    let rescale = json.get("rescale_factor").and_then(Value::as_f64).unwrap_or(1.0 / 255.0);
    if (rescale - 1.0 / 255.0).abs() > 1e-12 {
        bail!("{source}: rescale_factor {rescale} is not 1/255");
    }
    let triple = |key: &str| -> Result<[f32; 3]> {
        match json.get(key) {
            None | Some(Value::Null) => Ok([0.5; 3]),
            Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.5) as f32; 3]),
            Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.5) as f32))
            }
            Some(other) => bail!("{source}: {key} is {other}, expected three numbers"),
        }
    };
    let std = triple("image_std")?;
    if std.contains(&0.0) {
        bail!("{source}: image_std contains 0");
    }
    Ok(Transform { size: height as usize, filter, mean: triple("image_mean")?, std })
}

/// The vision tower, its parameters under SigLIP's names (`embeddings.*`, `encoder.layers.*`,
/// `post_layernorm.*`, `head.*`).
#[derive(Debug)]
struct VisionTower {
    patch_embedding: nn::Conv2D,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    post_layernorm: nn::LayerNorm,
    head: PoolingHead,
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: nn::LayerNorm,
    attention: Attention,
    layer_norm2: nn::LayerNorm,
    mlp: Mlp,
}

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    heads: i64,
}

#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
    activation: Activation,
}

/// Multihead attention pooling: one learned query (`probe`) attends over every patch through
/// a `torch.nn.MultiheadAttention` (packed `in_proj_weight`), then a residual MLP.
#[derive(Debug)]
struct PoolingHead {
    probe: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    heads: i64,
    layernorm: nn::LayerNorm,
    mlp: Mlp,
}

fn layer_norm(p: nn::Path, c: &VisionConfig) -> nn::LayerNorm {
    let config = nn::LayerNormConfig { eps: c.layer_norm_eps, ..Default::default() };
    layers::layer_norm(p, vec![c.hidden_size], config)
}

/// Splits `(B, T, E)` into `(B, heads, T, E / heads)`.
fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let (b, t, e) = x.size3().expect("(batch, tokens, width)");
    x.view([b, t, heads, e / heads]).transpose(1, 2)
}

/// Scaled dot-product attention (scale 1/sqrt(head width), as both SigLIP's attention and
/// MultiheadAttention use) over split heads, merged back to `(B, Tq, E)`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Tensor {
    let (b, t, e) = q.size3().expect("(batch, tokens, width)");
    let (q, k, v) = (split_heads(q, heads), split_heads(k, heads), split_heads(v, heads));
    Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false)
        .transpose(1, 2)
        .reshape([b, t, e])
}

impl Mlp {
    fn new(p: nn::Path, c: &VisionConfig) -> Mlp {
        Mlp {
            fc1: layers::linear(&p / "fc1", c.hidden_size, c.intermediate_size, Default::default()),
            fc2: layers::linear(&p / "fc2", c.intermediate_size, c.hidden_size, Default::default()),
            activation: c.activation,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.activation.forward(&self.fc1.forward(x));
        self.fc2.forward(&h)
    }
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (q, k, v) = (self.q_proj.forward(x), self.k_proj.forward(x), self.v_proj.forward(x));
        self.out_proj.forward(&attend(&q, &k, &v, self.heads))
    }
}

impl EncoderLayer {
    fn new(p: nn::Path, c: &VisionConfig) -> EncoderLayer {
        let a = &p / "self_attn";
        let linear = |name: &str| layers::linear(&a / name, c.hidden_size, c.hidden_size, Default::default());
        EncoderLayer {
            layer_norm1: layer_norm(&p / "layer_norm1", c),
            attention: Attention {
                q_proj: linear("q_proj"),
                k_proj: linear("k_proj"),
                v_proj: linear("v_proj"),
                out_proj: linear("out_proj"),
                heads: c.num_attention_heads,
            },
            layer_norm2: layer_norm(&p / "layer_norm2", c),
            mlp: Mlp::new(&p / "mlp", c),
        }
    }

    /// Pre-norm residual blocks: attention, then MLP.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attention.forward(&self.layer_norm1.forward(x));
        &x + self.mlp.forward(&self.layer_norm2.forward(&x))
    }
}

impl PoolingHead {
    fn new(p: nn::Path, c: &VisionConfig) -> PoolingHead {
        let e = c.hidden_size;
        let attention = &p / "attention";
        PoolingHead {
            probe: p.zeros("probe", &[1, 1, e]),
            in_proj_weight: attention.zeros("in_proj_weight", &[3 * e, e]),
            in_proj_bias: attention.zeros("in_proj_bias", &[3 * e]),
            out_proj: layers::linear(&attention / "out_proj", e, e, Default::default()),
            heads: c.num_attention_heads,
            layernorm: layer_norm(&p / "layernorm", c),
            mlp: Mlp::new(&p / "mlp", c),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let batch = x.size()[0];
        // MultiheadAttention packs the query, key and value projections, in that order.
        let w = self.in_proj_weight.chunk(3, 0);
        let b = self.in_proj_bias.chunk(3, 0);
        let probe = self.probe.expand([batch, -1, -1], false);
        let q = probe.linear(&w[0], Some(&b[0]));
        let k = x.linear(&w[1], Some(&b[1]));
        let v = x.linear(&w[2], Some(&b[2]));
        let pooled = self.out_proj.forward(&attend(&q, &k, &v, self.heads));
        let pooled = &pooled + self.mlp.forward(&self.layernorm.forward(&pooled));
        pooled.select(1, 0)
    }
}

impl VisionTower {
    fn new(p: &nn::Path, c: &VisionConfig) -> VisionTower {
        let embeddings = p / "embeddings";
        let conv = nn::ConvConfig { stride: c.patch_size, ..Default::default() };
        // The convolution drops what a whole patch does not cover (so400m: 384 / 14 -> 27 a side).
        let patches = (c.image_size / c.patch_size).pow(2);
        let encoder_layers = p / "encoder" / "layers";
        VisionTower {
            patch_embedding: layers::conv2d(
                &embeddings / "patch_embedding",
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
            ),
            position_embedding: (&embeddings / "position_embedding").zeros("weight", &[patches, c.hidden_size]),
            layers: (0..c.num_hidden_layers).map(|i| EncoderLayer::new(&encoder_layers / i, c)).collect(),
            post_layernorm: layer_norm(p / "post_layernorm", c),
            head: PoolingHead::new(p / "head", c),
        }
    }
}

impl nn::ModuleT for VisionTower {
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        // Patches (no class token) plus one learned position embedding each.
        let mut x = self.patch_embedding.forward(images).flatten(2, -1).transpose(1, 2) + &self.position_embedding;
        for layer in &self.layers {
            x = layer.forward(&x);
        }
        self.head.forward(&self.post_layernorm.forward(&x))
    }
}

impl Family for Siglip {
    fn name(&self) -> &'static str {
        "siglip"
    }

    fn versions(&self) -> &'static [Version] {
        VERSIONS
    }

    /// The tower the weights' shapes imply (see [`VisionConfig::from_weights`]); [`Family::load`]
    /// builds from config.json instead.
    fn build(&self, _: &Version, _: UseCase, weights: &StateDict, p: &nn::Path) -> Result<Backbone> {
        let config = VisionConfig::from_weights(weights)?;
        Ok(Backbone { module: Box::new(VisionTower::new(p, &config)), transform: config.default_transform() })
    }

    fn unused(&self, _: UseCase, key: &str) -> bool {
        // transformers 4.3x saved the position ids buffer.
        key == "embeddings.position_ids"
    }

    fn identify(&self, weights: &StateDict) -> Option<&'static str> {
        let siglip = |prefix: &str| {
            ["head.probe", "embeddings.patch_embedding.weight", "post_layernorm.weight"]
                .iter()
                .all(|k| weights.contains(&format!("{prefix}{k}")))
        };
        ["", "vision_model.", "base_model.vision_model.", "base_model.base_model.model.vision_model."]
            .iter()
            .any(|p| siglip(p))
            .then_some("siglip")
    }

    fn refuse(&self, _: &Version, use_case: UseCase, added_layers: Option<i64>) -> Result<()> {
        if use_case != UseCase::Pretrained && added_layers == Some(1) {
            bail!(
                "a SigLIP checkpoint with one added layer has no embedding to extract: DeepTune's SigLIP embedding is \
                 fc_layers[0]'s output, which with --added_layers 1 is the classifier's (the class logits); use a model \
                 trained with --added_layers 2, or --use_case pretrained for the pooled features"
            );
        }
        Ok(())
    }

    fn load(&self, version: &'static Version, opts: &VisionOptions, device: Device) -> Result<EmbeddingModel> {
        let mut vs = nn::VarStore::new(device);
        let mut details = serde_json::Map::new();
        let use_case = opts.use_case;
        let (tower, config, transform, fc1, dims) = match use_case {
            UseCase::Pretrained => {
                self.refuse(version, use_case, None)?;
                opts.head.warn_if_given_for_pretrained();
                let dir = pretrained_dir(opts)?;
                let config_file = dir.join("config.json");
                let config = VisionConfig::read(&config_file)?;
                // A whole SiglipModel (and transformers 4's SiglipVisionModel) nests the tower
                // under `vision_model.`; taking that prefix leaves out the logit scale and bias,
                // and the text tower is not even read.
                let sd = StateDict::load_hf_dir_where(&dir, "vision_model.", "post_layernorm.weight", not_text_tower)?;
                let transform = match find_preprocessor(&dir) {
                    Some(file) => {
                        details.insert("preprocessor".into(), file.display().to_string().into());
                        read_preprocessor(&file)?
                    }
                    None => config.default_transform(),
                };
                log::info!("loading SigLIP weights from {}", sd.source().display());
                details.insert("weights".into(), sd.source().display().to_string().into());
                details.insert("config".into(), config_file.display().to_string().into());
                let tower = VisionTower::new(&vs.root(), &config);
                sd.copy_into(&mut vs, |k| self.unused(use_case, k))
                    .with_context(|| format!("{} is not the SigLIP model its config.json describes", dir.display()))?;
                let dims = config.hidden_size;
                (tower, config, transform, None, dims)
            }
            UseCase::Finetuned | UseCase::Peft => {
                let file = weights::deeptune_checkpoint(opts, "pt", "DeepTune's custom_siglip_model.pt")?;
                log::info!("loading DeepTune SigLIP {} checkpoint {}", use_case.name(), file.display());
                let sd = Checkpoint::open(&file)?.state_dict_where(not_text_tower)?;
                let beside = file.parent().unwrap_or(Path::new("."));
                let config_file = beside.join("config.json");
                let config = if config_file.is_file() {
                    details.insert("config".into(), config_file.display().to_string().into());
                    VisionConfig::read(&config_file)?
                } else {
                    log::info!("no config.json beside {}: using siglip-so400m-patch14-384's shape", file.display());
                    details.insert("config".into(), "google/siglip-so400m-patch14-384".into());
                    VisionConfig::SO400M
                };
                let transform = match find_preprocessor(beside) {
                    Some(file) => {
                        details.insert("preprocessor".into(), file.display().to_string().into());
                        read_preprocessor(&file)?
                    }
                    None => config.default_transform(),
                };
                let head = deeptune_head(&sd, opts, &config, device)?;
                self.refuse(version, use_case, Some(head.added_layers))?;
                let backbone = deeptune_backbone(&sd, opts, &mut details)?;
                let tower = VisionTower::new(&vs.root(), &config);
                backbone.copy_into(&mut vs, |k| self.unused(use_case, k)).with_context(|| {
                    format!("the checkpoint's SigLIP vision tower does not match {}", details["config"])
                })?;
                details.insert("weights".into(), file.display().to_string().into());
                details.insert("added_layers".into(), head.added_layers.into());
                details.insert("num_classes".into(), head.num_classes.into());
                // `refuse` let only two added layers through: the embedding is fc_layers[0]'s output.
                let embed_size = head.embed_size.unwrap_or(config.hidden_size);
                details.insert("embed_size".into(), embed_size.into());
                (tower, config, transform, Some(head.fc1), embed_size)
            }
        };
        // The position embeddings fix the patch grid (transformers refuses other grids too).
        if transform.size as i64 / config.patch_size != config.image_size / config.patch_size {
            bail!(
                "the preprocessor resizes to {0}x{0} but the model takes {1}x{1} images",
                transform.size,
                config.image_size
            );
        }
        vs.freeze();
        details.insert("model_version".into(), version.name.into());
        details.insert("input_size".into(), transform.size.into());
        Ok(EmbeddingModel::new(vs, Box::new(tower), fc1, dims, transform, details))
    }
}

/// The Hugging Face directory of a pretrained run (`--model_weights`, required: nothing is
/// downloaded). A weights file names its directory.
fn pretrained_dir(opts: &VisionOptions) -> Result<PathBuf> {
    let path = opts.model_weights.as_ref().ok_or_else(|| {
        anyhow!(
            "pretrained siglip needs --model_weights: a Hugging Face SigLIP directory (config.json, model.safetensors, \
             preprocessor_config.json), e.g. google/siglip-so400m-patch14-384 saved with save_pretrained; nothing is downloaded"
        )
    })?;
    if path.extension().is_some_and(|e| e == "pt") {
        bail!(
            "--model_weights {} looks like DeepTune's fine-tuned SigLIP checkpoint: use --use_case finetuned or peft",
            path.display()
        );
    }
    let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.clone() };
    if !dir.join("config.json").is_file() {
        bail!(
            "--model_weights {}: no config.json there; pretrained siglip takes a Hugging Face model directory",
            path.display()
        );
    }
    Ok(dir)
}

/// `preprocessor_config.json` in `dir`, else in DeepTune's layout (`model/` beside
/// `preprocessor/`).
fn find_preprocessor(dir: &Path) -> Option<PathBuf> {
    let here = dir.join("preprocessor_config.json");
    let deeptune = dir.parent().map(|p| p.join("preprocessor").join("preprocessor_config.json"));
    std::iter::once(here).chain(deeptune).find(|p| p.is_file())
}

/// `fc_layers` of DeepTune's CustomSiglipModel on the pooled output, checked against the flags
/// given.
fn deeptune_head(sd: &StateDict, opts: &VisionOptions, config: &VisionConfig, device: Device) -> Result<Head> {
    let layout = HeadLayout {
        first: "fc_layers.0",
        second: "fc_layers.1",
        kind: "DeepTune SigLIP checkpoint".into(),
        backbone: "the assumed SigLIP's",
        features: config.hidden_size,
        hint: "the checkpoint was trained on another SigLIP; put the base model's config.json (and \
               preprocessor_config.json) beside it",
    };
    weights::deeptune_head(sd, opts, &layout, device)
}

/// The vision tower's weights in a DeepTune checkpoint, LoRA merged for peft, under SigLIP's
/// names.
fn deeptune_backbone(
    sd: &StateDict,
    opts: &VisionOptions,
    details: &mut serde_json::Map<String, Value>,
) -> Result<StateDict> {
    let has_lora = deepembed_sdk::lora::check_use_case(sd, opts.use_case)?;
    // CustomSiglipModel keeps the SiglipModel as `base_model`; with peft that is a PeftModel,
    // whose LoraModel holds the SiglipModel as `model`.
    let prefix = if has_lora { "base_model.base_model.model.vision_model." } else { "base_model.vision_model." };
    let tower = sd.strip_prefix(prefix);
    if tower.is_empty() {
        bail!("{} has no `{prefix}*` weights: it is not a DeepTune SigLIP checkpoint", sd.source().display());
    }
    if !has_lora {
        return Ok(tower);
    }
    let alpha = opts.lora_alpha.unwrap_or(DEEPTUNE_LORA_ALPHA);
    let merged = deepembed_sdk::lora::merge(&tower, &deepembed_sdk::lora::LoraSettings::with_alpha(alpha))?;
    log::info!(
        "merged LoRA updates (rank {}, alpha {alpha}) into {} vision layers",
        merged.ranks_text(),
        merged.layers
    );
    details.insert("lora_alpha".into(), alpha.into());
    details.insert("lora_rank".into(), merged.ranks_text().into());
    Ok(merged.weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_added_layer_is_refused_with_the_reason() {
        let err = Siglip.refuse(&VERSIONS[0], UseCase::Finetuned, Some(1)).unwrap_err().to_string();
        assert!(err.contains("class logits"), "{err}");
        assert!(Siglip.refuse(&VERSIONS[0], UseCase::Peft, Some(2)).is_ok());
        assert!(Siglip.refuse(&VERSIONS[0], UseCase::Pretrained, None).is_ok());
    }

    #[test]
    fn config_reads_a_full_model_and_fills_transformers_defaults() {
        let json: Value = serde_json::from_str(
            r#"{"model_type": "siglip", "text_config": {"hidden_size": 32},
                "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                  "num_attention_heads": 16, "image_size": 384, "patch_size": 14}}"#,
        )
        .unwrap();
        assert_eq!(VisionConfig::from_json(&json, Path::new("config.json")).unwrap(), VisionConfig::SO400M);
        let bare: Value = serde_json::from_str(r#"{"hidden_act": "gelu", "layer_norm_eps": 1e-5}"#).unwrap();
        let c = VisionConfig::from_json(&bare, Path::new("config.json")).unwrap();
        assert_eq!(
            (c.hidden_size, c.image_size, c.patch_size, c.layer_norm_eps, c.activation),
            (768, 224, 16, 1e-5, Activation::Gelu)
        );
        let headless: Value = serde_json::from_str(r#"{"vision_use_head": false}"#).unwrap();
        assert!(VisionConfig::from_json(&headless, Path::new("c.json")).is_err());
    }
}

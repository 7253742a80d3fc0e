//! One `PerFeatureEncoderLayer` (tabpfn 6.2 `architectures/base/layer.py`), post-norm, in
//! inference: attention between the feature tokens of each row, attention between the rows of
//! each token column, then an MLP, each followed by a LayerNorm without affine parameters.
//!
//! The item attention is split the way eval rows allow: the context rows (thinking + train)
//! attend among themselves ([`Layer::context_items`]), which also yields the keys and values the
//! eval rows need; eval rows attend only to those ([`Layer::eval_items`]), never to each other.

use anyhow::Result;
use deepembed_sdk::weights::Scope;
use tch::{Kind, Tensor};

/// `LayerNorm(emsize, eps=1e-5, elementwise_affine=False)`.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Caps the elements of one chunk's intermediate tensors (64 MiB of f32), so a long context does
/// not hold every row's attention and MLP activations at once.
pub(crate) const CHUNK_ELEMENTS: i64 = 1 << 24;

pub(crate) struct Layer {
    heads: i64,
    head_dim: i64,
    /// `[3 * H * D, E]`: queries, keys and values of the feature attention in one product.
    feature_qkv: Tensor,
    /// `[H * D, E]`.
    feature_out: Tensor,
    /// `[H * D, E]` each.
    item_q: Tensor,
    item_k: Tensor,
    item_v: Tensor,
    item_out: Tensor,
    /// `[E * nhid_factor, E]` and `[E, E * nhid_factor]`, no bias.
    mlp_in: Tensor,
    mlp_out: Tensor,
    /// Eval rows use head 0's keys and values for every head.
    multiquery: bool,
}

/// The context's keys and values for one layer, `[tokens, kv heads, context rows, head_dim]`
/// each, kv heads being 1 (head 0, multiquery) or all heads.
pub(crate) struct ContextKv {
    pub keys: Tensor,
    pub values: Tensor,
}

impl Layer {
    /// Loads `transformer_encoder.layers.{l}` from `w` (already scoped there).
    pub fn load(w: &Scope, emsize: i64, heads: i64, hidden: i64, multiquery: bool) -> Result<Layer> {
        let d = emsize / heads;
        let features = w.tensor("self_attn_between_features._w_qkv", &[3, heads, d, emsize])?;
        let feature_out = w.tensor("self_attn_between_features._w_out", &[heads, d, emsize])?;
        let items = w.tensor("self_attn_between_items._w_qkv", &[3, heads, d, emsize])?;
        let item_out = w.tensor("self_attn_between_items._w_out", &[heads, d, emsize])?;
        let mlp_in = w.tensor("mlp.linear1.weight", &[hidden, emsize])?;
        let mlp_out = w.tensor("mlp.linear2.weight", &[emsize, hidden])?;
        let item = |i: i64| items.select(0, i).reshape([heads * d, emsize]);
        Ok(Layer {
            heads,
            head_dim: d,
            feature_qkv: features.reshape([3 * heads * d, emsize]),
            feature_out: feature_out.reshape([heads * d, emsize]),
            item_q: item(0),
            item_k: item(1),
            item_v: item(2),
            item_out: item_out.reshape([heads * d, emsize]),
            mlp_in,
            mlp_out,
            multiquery,
        })
    }

    /// Feature attention and its LayerNorm, for `rows` `[b, tokens, E]` (each row on its own).
    pub fn features(&self, rows: &Tensor) -> Tensor {
        let (b, tokens, e) = dims3(rows);
        let qkv = rows.matmul(&self.feature_qkv.tr()).reshape([b, tokens, 3, self.heads, self.head_dim]);
        let part = |i: i64| qkv.select(2, i).transpose(1, 2);
        let heads = attend(&part(0), &part(1), &part(2));
        let out = merge_heads(&heads).matmul(&self.feature_out);
        layer_norm(&(rows + out), e)
    }

    /// Item attention among the context rows, for `columns` `[tokens, context rows, E]` (each
    /// token column on its own); returns the new columns and the keys and values eval rows need.
    pub fn context_items(&self, columns: &Tensor) -> (Tensor, ContextKv) {
        let e = columns.size()[2];
        let q = self.split_heads(&columns.matmul(&self.item_q.tr()), self.heads);
        let k = self.split_heads(&columns.matmul(&self.item_k.tr()), self.heads);
        let v = self.split_heads(&columns.matmul(&self.item_v.tr()), self.heads);
        let heads = attend(&q, &k, &v);
        let out = merge_heads(&heads).matmul(&self.item_out);
        let kept = if self.multiquery { 1 } else { self.heads };
        let kv = ContextKv { keys: k.narrow(1, 0, kept).contiguous(), values: v.narrow(1, 0, kept).contiguous() };
        (layer_norm(&(columns + out), e), kv)
    }

    /// Item attention of eval rows, `columns` `[tokens, b, E]`, to the context's `kv`.
    pub fn eval_items(&self, columns: &Tensor, kv: &ContextKv) -> Tensor {
        let (tokens, b, e) = dims3(columns);
        let q = self.split_heads(&columns.matmul(&self.item_q.tr()), self.heads);
        let heads = if kv.keys.size()[1] == 1 {
            // Every head attends to the same keys and values: one "head" of H * b queries.
            let q = q.reshape([tokens, 1, self.heads * b, self.head_dim]);
            attend(&q, &kv.keys, &kv.values).reshape([tokens, self.heads, b, self.head_dim])
        } else {
            attend(&q, &kv.keys, &kv.values)
        };
        let out = merge_heads(&heads).matmul(&self.item_out);
        layer_norm(&(columns + out), e)
    }

    /// The MLP and its LayerNorm, for any `[..., E]`.
    pub fn mlp(&self, x: &Tensor) -> Tensor {
        let e = *x.size().last().expect("a tensor with dimensions");
        let hidden = x.linear::<Tensor>(&self.mlp_in, None).gelu("none");
        layer_norm(&(x + hidden.linear::<Tensor>(&self.mlp_out, None)), e)
    }

    /// `[batch, len, H * D]` to `[batch, H, len, D]`.
    fn split_heads(&self, x: &Tensor, heads: i64) -> Tensor {
        let (batch, len, _) = dims3(x);
        x.reshape([batch, len, heads, self.head_dim]).transpose(1, 2)
    }
}

/// Softmax attention with scale `1/sqrt(D)`, `[batch, H, len, D]` in and out, through libtorch's
/// `scaled_dot_product_attention` as tabpfn calls it.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, false)
}

/// `[batch, H, len, D]` to `[batch, len, H * D]`.
fn merge_heads(x: &Tensor) -> Tensor {
    let size = x.size();
    x.transpose(1, 2).reshape([size[0], size[2], size[1] * size[3]])
}

fn layer_norm(x: &Tensor, width: i64) -> Tensor {
    x.layer_norm([width], None::<Tensor>, None::<Tensor>, LAYER_NORM_EPS, true)
}

fn dims3(x: &Tensor) -> (i64, i64, i64) {
    let s = x.size();
    (s[0], s[1], s[2])
}

/// Runs `f` over chunks of dim `dim` of `x` (at most `per_item` elements of work per index, at
/// most [`CHUNK_ELEMENTS`] per chunk) and puts the results back together along `dim`.
pub(crate) fn chunked(x: &Tensor, dim: i64, per_item: i64, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let total = x.size()[dim as usize];
    let step = (CHUNK_ELEMENTS / per_item.max(1)).max(1);
    if step >= total {
        return f(x);
    }
    let out = Tensor::empty(x.size(), (Kind::Float, x.device()));
    let mut start = 0;
    while start < total {
        let len = step.min(total - start);
        out.narrow(dim, start, len).copy_(&f(&x.narrow(dim, start, len)));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Attention written out: softmax(q k^T / sqrt(D)) v.
    fn reference_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let d = q.size()[3] as f64;
        (q.matmul(&k.transpose(-1, -2)) / d.sqrt()).softmax(-1, Kind::Float).matmul(v)
    }

    #[test]
    fn attention_is_softmax_attention() {
        let opts = (Kind::Float, Device::Cpu);
        let (q, k, v) = crate::model::seeded(3, || {
            (Tensor::randn([2, 3, 5, 4], opts), Tensor::randn([2, 3, 7, 4], opts), Tensor::randn([2, 3, 7, 4], opts))
        });
        let diff = (attend(&q, &k, &v) - reference_attention(&q, &k, &v)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn gelu_is_the_exact_erf_form() {
        // Phi(1) = 0.841344746..., so gelu(1) = 0.841344746 and gelu(-1) = -0.158655254; the tanh
        // approximation gives 0.841192.
        let x = Tensor::from_slice(&[1.0f32, -1.0]).gelu("none");
        let v = Vec::<f32>::try_from(x).unwrap();
        assert!(
            (f64::from(v[0]) - 0.841_344_746).abs() < 1e-6 && (f64::from(v[1]) + 0.158_655_254).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn layer_norm_has_no_affine_part() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([1, 4]);
        let v = Vec::<f32>::try_from(layer_norm(&x, 4).flatten(0, -1)).unwrap();
        // mean 2.5, population variance 1.25
        let s = (1.25f32 + 1e-5).sqrt();
        for (got, raw) in v.iter().zip([1.0f32, 2.0, 3.0, 4.0]) {
            assert!((got - (raw - 2.5) / s).abs() < 1e-6);
        }
    }

    #[test]
    fn chunks_reassemble_in_order() {
        let x = Tensor::arange(10, (Kind::Float, Device::Cpu)).reshape([5, 2]);
        let whole = chunked(&x, 0, CHUNK_ELEMENTS / 2, |c| c * 2.0 + 1.0);
        assert_eq!(
            Vec::<f32>::try_from(whole.flatten(0, -1)).unwrap(),
            (0..10).map(|i| i as f32 * 2.0 + 1.0).collect::<Vec<_>>()
        );
        let cols = chunked(&x, 1, CHUNK_ELEMENTS, |c| c.neg());
        assert_eq!(
            Vec::<f32>::try_from(cols.flatten(0, -1)).unwrap(),
            (0..10).map(|i| -(i as f32)).collect::<Vec<_>>()
        );
    }
}

//! The LLaMA-style decoder's loss, mirroring `reference/src/model.rs` (`Params::loss` and
//! `Params::loss_and_grads`) op for op: same ops, same order, same arguments.

use crusades_sdk::nn;
use crusades_sdk::workload::ModelConfig;
use crusades_sdk::{Error, Result, Tensor};

/// Parameters per decoder layer: input norm, q, k, v, o, post-attention norm, gate, up, down.
const PER_LAYER: usize = 9;

/// The parameter names in the model's canonical order (`reference/src/model.rs`, `param_specs`).
pub fn param_names(layers: usize) -> Vec<String> {
    let mut names = vec!["model.embed_tokens.weight".to_string()];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        names.extend([
            format!("{p}.input_layernorm.weight"),
            format!("{p}.self_attn.q_proj.weight"),
            format!("{p}.self_attn.k_proj.weight"),
            format!("{p}.self_attn.v_proj.weight"),
            format!("{p}.self_attn.o_proj.weight"),
            format!("{p}.post_attention_layernorm.weight"),
            format!("{p}.mlp.gate_proj.weight"),
            format!("{p}.mlp.up_proj.weight"),
            format!("{p}.mlp.down_proj.weight"),
        ]);
    }
    names.push("model.norm.weight".into());
    names.push("lm_head.weight".into());
    names
}

/// The host-owned parameters, in the model's order (checked by name), and the model's shape.
pub struct Params {
    pub config: ModelConfig,
    pub tensors: Vec<Tensor>,
    /// The RoPE tables of the last sequence length: (T, cos, sin). The reference rebuilds them
    /// on every call; they are constants, so reusing them changes no value.
    rope: Option<(i64, Tensor, Tensor)>,
}

impl Params {
    pub fn new(config: ModelConfig, named: Vec<(String, Tensor)>) -> Result<Self> {
        let (d, h, hkv) = (config.d_model, config.heads, config.kv_heads);
        if h == 0 || hkv == 0 || d % h != 0 || h % hkv != 0 || (d / h) % 2 != 0 {
            return Err(Error::guest(format!(
                "d_model {d}, heads {h}, kv_heads {hkv}: heads must divide d_model into even \
                 head dims, and kv_heads must divide heads"
            )));
        }
        let want = 1 + config.layers as usize * PER_LAYER + 2;
        if named.len() != want {
            return Err(Error::guest(format!(
                "the model has {want} parameters, the host gave {}",
                named.len()
            )));
        }
        let (names, tensors): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let expected = param_names(config.layers as usize);
        if let Some((got, want)) = names.iter().zip(&expected).find(|(g, w)| g != w) {
            return Err(Error::guest(format!(
                "the host's parameters are not in the model's order: got {got}, expected {want}"
            )));
        }
        Ok(Self {
            config,
            tensors,
            rope: None,
        })
    }

    /// The mean token cross-entropy of `inputs → labels` (both i64 `[seqs, T]`), in f32.
    pub fn loss(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let m = self.config;
        let [batch, t] = inputs.shape()[..] else {
            return Err(Error::guest(format!(
                "inputs must be [seqs, T], got {:?}",
                inputs.shape()
            )));
        };
        let (d, vocab) = (m.d_model as i64, m.vocab as i64);
        let (hd, h, hkv) = (m.head_dim(), m.heads as i64, m.kv_heads as i64);
        if !matches!(self.rope, Some((len, _, _)) if len == t) {
            let (cos, sin) = nn::rope_tables(t, hd, m.rope_theta)?;
            self.rope = Some((t, cos, sin));
        }
        let Some((_, cos, sin)) = &self.rope else {
            return Err(Error::guest("no RoPE tables"));
        };
        let p = |i: usize| &self.tensors[i];

        let mut x = Tensor::embedding(p(0), inputs)?;
        for layer in 0..m.layers as usize {
            let b = 1 + layer * PER_LAYER;
            let a = nn::rms_norm(&x, d, p(b), m.rms_eps)?;
            let q = a
                .linear(p(b + 1), None)?
                .view(&[batch, t, h, hd])?
                .transpose(1, 2)?;
            let k = a
                .linear(p(b + 2), None)?
                .view(&[batch, t, hkv, hd])?
                .transpose(1, 2)?;
            let v = a
                .linear(p(b + 3), None)?
                .view(&[batch, t, hkv, hd])?
                .transpose(1, 2)?;
            let q = nn::apply_rope(&q, cos, sin, hd)?;
            let k = nn::repeat_kv(nn::apply_rope(&k, cos, sin, hd)?, h, hkv)?;
            let v = nn::repeat_kv(v, h, hkv)?;
            let attn = nn::causal_attention(&q, &k, &v)?
                .transpose(1, 2)?
                .reshape(&[batch, t, h * hd])?
                .linear(p(b + 4), None)?;
            x = x.add(&attn)?;
            let a = nn::rms_norm(&x, d, p(b + 5), m.rms_eps)?;
            let mlp = nn::swiglu(&a, p(b + 6), p(b + 7), p(b + 8))?;
            x = x.add(&mlp)?;
        }
        let n = self.tensors.len();
        let x = nn::rms_norm(&x, d, p(n - 2), m.rms_eps)?;
        let logits = x.linear(p(n - 1), None)?;
        logits
            .view(&[batch * t, vocab])?
            .cross_entropy(&labels.reshape(&[batch * t])?, "mean")
    }

    /// The loss (detached) and its gradient for every parameter (not accumulated into `.grad`).
    pub fn loss_and_grads(
        &mut self,
        inputs: &Tensor,
        labels: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let loss = self.loss(inputs, labels)?;
        let params: Vec<&Tensor> = self.tensors.iter().collect();
        let grads = Tensor::autograd_grad(&[&loss], &params, false)?;
        if grads.len() != params.len() {
            return Err(Error::guest(format!(
                "autograd_grad gave {} gradients for {} parameters",
                grads.len(),
                params.len()
            )));
        }
        Ok((loss.detach()?, grads))
    }
}

#[cfg(test)]
mod tests {
    use super::{param_names, PER_LAYER};

    #[test]
    fn parameter_names_follow_the_reference_order() {
        let names = param_names(2);
        assert_eq!(names.len(), 1 + 2 * PER_LAYER + 2);
        assert_eq!(names[0], "model.embed_tokens.weight");
        assert_eq!(names[1], "model.layers.0.input_layernorm.weight");
        assert_eq!(names[9], "model.layers.0.mlp.down_proj.weight");
        assert_eq!(names[10], "model.layers.1.input_layernorm.weight");
        assert_eq!(names[19], "model.norm.weight");
        assert_eq!(names[20], "lm_head.weight");
    }
}

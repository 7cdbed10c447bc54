//! The LLaMA-style decoder of WORKLOAD.md, as plain functions over named tensors.
//!
//! Parameter names follow Hugging Face's LLaMA so that Templar's tooling reads our weight files:
//! `model.embed_tokens.weight`, `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
//! `model.layers.{i}.{input,post_attention}_layernorm.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`, `model.norm.weight`, `lm_head.weight`.
//! Linear weights are `[out, in]`.
//!
//! Init (part of the workload definition): tensor `name` draws element `j` (row-major) from the
//! standard-normal stream of `rng::normal_at(key, j)` with
//! `key = splitmix64(seed XOR fnv1a64(name))`, times 0.02, times `1/√(2L)` for `o_proj` and
//! `down_proj`, rounded to f32. Norm weights are ones.

use rayon::prelude::*;
use tch::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::rng::{fnv1a64, normal_at, splitmix64};

pub const RMS_EPS: f64 = 1e-5;
pub const ROPE_THETA: f64 = 10_000.0;
pub const INIT_STD: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal { std: f64 },
    Ones,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    /// An input-embedding table: a lookup, not a matmul, so it does no FLOPs.
    pub is_embedding: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// Every parameter, in the canonical order that uploads and weight files use.
pub fn param_specs(m: &ModelConfig) -> Vec<ParamSpec> {
    let q = m.head_dim();
    let normal = Init::Normal { std: INIT_STD };
    let out_proj = Init::Normal {
        std: INIT_STD / (2.0 * m.layers as f64).sqrt(),
    };
    let spec = |name: String, shape: Vec<i64>, init| ParamSpec {
        name,
        shape,
        init,
        is_embedding: false,
    };
    let mut specs = vec![ParamSpec {
        is_embedding: true,
        ..spec(
            "model.embed_tokens.weight".into(),
            vec![m.vocab, m.d_model],
            normal,
        )
    }];
    for i in 0..m.layers {
        let p = format!("model.layers.{i}");
        specs.extend([
            spec(
                format!("{p}.input_layernorm.weight"),
                vec![m.d_model],
                Init::Ones,
            ),
            spec(
                format!("{p}.self_attn.q_proj.weight"),
                vec![m.heads * q, m.d_model],
                normal,
            ),
            spec(
                format!("{p}.self_attn.k_proj.weight"),
                vec![m.kv_heads * q, m.d_model],
                normal,
            ),
            spec(
                format!("{p}.self_attn.v_proj.weight"),
                vec![m.kv_heads * q, m.d_model],
                normal,
            ),
            spec(
                format!("{p}.self_attn.o_proj.weight"),
                vec![m.d_model, m.heads * q],
                out_proj,
            ),
            spec(
                format!("{p}.post_attention_layernorm.weight"),
                vec![m.d_model],
                Init::Ones,
            ),
            spec(
                format!("{p}.mlp.gate_proj.weight"),
                vec![m.ffn, m.d_model],
                normal,
            ),
            spec(
                format!("{p}.mlp.up_proj.weight"),
                vec![m.ffn, m.d_model],
                normal,
            ),
            spec(
                format!("{p}.mlp.down_proj.weight"),
                vec![m.d_model, m.ffn],
                out_proj,
            ),
        ]);
    }
    specs.push(spec(
        "model.norm.weight".into(),
        vec![m.d_model],
        Init::Ones,
    ));
    specs.push(spec(
        "lm_head.weight".into(),
        vec![m.vocab, m.d_model],
        normal,
    ));
    specs
}

/// The number of parameters of a model, embedding included.
pub fn parameter_count(m: &ModelConfig) -> i64 {
    param_specs(m).iter().map(ParamSpec::numel).sum()
}

/// The initial values of one parameter, on the host.
pub fn init_values(spec: &ParamSpec, seed: u64) -> Vec<f32> {
    let n = spec.numel() as usize;
    match spec.init {
        Init::Ones => vec![1.0; n],
        Init::Normal { std } => {
            let key = splitmix64(seed ^ fnv1a64(spec.name.as_bytes()));
            let mut out = vec![0f32; n];
            const BLOCK: usize = 1 << 16;
            out.par_chunks_mut(BLOCK)
                .enumerate()
                .for_each(|(b, chunk)| {
                    let base = (b * BLOCK) as u64;
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v = (normal_at(key, base + i as u64) * std) as f32;
                    }
                });
            out
        }
    }
}

/// The model's parameters: host-owned f32 tensors in `param_specs` order.
pub struct Params {
    pub config: ModelConfig,
    pub specs: Vec<ParamSpec>,
    pub tensors: Vec<Tensor>,
}

impl Params {
    /// θ0 for `seed`, as leaf tensors that require grad.
    pub fn init(config: &ModelConfig, seed: u64, device: Device) -> Result<Self> {
        let specs = param_specs(config);
        let tensors = specs
            .iter()
            .map(|s| {
                let t = Tensor::f_from_slice(&init_values(s, seed))?
                    .f_view(s.shape.as_slice())?
                    .f_to_device(device)?;
                Ok(t.set_requires_grad(true))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: *config,
            specs,
            tensors,
        })
    }

    /// Replaces the values with `named` tensors (e.g. a weights file), checking names and shapes.
    pub fn load(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        for (spec, t) in self.specs.iter().zip(self.tensors.iter_mut()) {
            let (_, src) = named.iter().find(|(n, _)| n == &spec.name).ok_or_else(|| {
                Error::Shape(format!("the weights have no tensor named {}", spec.name))
            })?;
            if src.size() != spec.shape {
                return Err(Error::Shape(format!(
                    "{}: the weights have shape {:?}, the model needs {:?}",
                    spec.name,
                    src.size(),
                    spec.shape
                )));
            }
            tch::no_grad(|| t.f_copy_(src))?;
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().map(|s| s.name.as_str())
    }

    pub fn device(&self) -> Device {
        self.tensors[0].device()
    }

    /// The mean token cross-entropy of `inputs → labels` (both `[seqs, T]`), in f32.
    pub fn loss(&self, inputs: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let m = &self.config;
        let [batch, t] = inputs.size()[..] else {
            return Err(Error::Shape(format!(
                "inputs must be [seqs, T], got {:?}",
                inputs.size()
            )));
        };
        let (hd, h, hkv) = (m.head_dim(), m.heads, m.kv_heads);
        let p = |i: usize| &self.tensors[i];
        let (cos, sin) = rope_tables(t, hd, self.device())?;

        let mut x = Tensor::f_embedding(p(0), inputs, -1, false, false)?;
        let per_layer = 9;
        for layer in 0..m.layers as usize {
            let b = 1 + layer * per_layer;
            let a = x.f_rms_norm([m.d_model], Some(p(b)), RMS_EPS)?;
            let q = a
                .f_linear::<Tensor>(p(b + 1), None)?
                .f_view([batch, t, h, hd])?
                .f_transpose(1, 2)?;
            let k = a
                .f_linear::<Tensor>(p(b + 2), None)?
                .f_view([batch, t, hkv, hd])?
                .f_transpose(1, 2)?;
            let v = a
                .f_linear::<Tensor>(p(b + 3), None)?
                .f_view([batch, t, hkv, hd])?
                .f_transpose(1, 2)?;
            let q = apply_rope(&q, &cos, &sin)?;
            let (k, v) = if hkv == h {
                (apply_rope(&k, &cos, &sin)?, v)
            } else {
                let groups = h / hkv;
                (
                    apply_rope(&k, &cos, &sin)?.f_repeat_interleave_self_int(groups, 1, None)?,
                    v.f_repeat_interleave_self_int(groups, 1, None)?,
                )
            };
            let attn = Tensor::f_scaled_dot_product_attention::<Tensor>(
                &q, &k, &v, None, 0.0, true, None, false,
            )?
            .f_transpose(1, 2)?
            .f_reshape([batch, t, h * hd])?
            .f_linear::<Tensor>(p(b + 4), None)?;
            x = x.f_add(&attn)?;
            let a = x.f_rms_norm([m.d_model], Some(p(b + 5)), RMS_EPS)?;
            let gate = a.f_linear::<Tensor>(p(b + 6), None)?.f_silu()?;
            let up = a.f_linear::<Tensor>(p(b + 7), None)?;
            let mlp = gate.f_mul(&up)?.f_linear::<Tensor>(p(b + 8), None)?;
            x = x.f_add(&mlp)?;
        }
        let n = self.tensors.len();
        let x = x.f_rms_norm([m.d_model], Some(p(n - 2)), RMS_EPS)?;
        let logits = x.f_linear::<Tensor>(p(n - 1), None)?;
        Ok(logits
            .f_view([batch * t, m.vocab])?
            .f_cross_entropy_loss::<Tensor>(
                &labels.f_reshape([batch * t])?,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )?)
    }

    /// The loss and its gradient for every parameter (not accumulated into `.grad`).
    pub fn loss_and_grads(
        &self,
        inputs: &Tensor,
        labels: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let loss = self.loss(inputs, labels)?;
        let grads = Tensor::f_run_backward(&[&loss], &self.tensors, false, false)?;
        Ok((loss.f_detach()?, grads))
    }
}

/// A new tensor with `t`'s values, outside autograd.
pub fn detached_copy(t: &Tensor) -> Result<Tensor> {
    let mut out = t.f_empty_like()?;
    out.f_copy_(&t.f_detach()?)?;
    Ok(out)
}

/// cos and sin tables `[T, head_dim]` for rotate-half RoPE, computed in f64 on the host so that
/// every device sees the same f32 values.
fn rope_tables(t: i64, head_dim: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity((t * head_dim) as usize);
    let mut sin = Vec::with_capacity((t * head_dim) as usize);
    for pos in 0..t {
        let angles: Vec<f64> = (0..half)
            .map(|i| pos as f64 / ROPE_THETA.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        // Both halves of the head share the frequencies (rotate-half layout).
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos() as f32));
            sin.extend(angles.iter().map(|a| a.sin() as f32));
        }
    }
    let to = |v: Vec<f32>| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&v)?
            .f_view([t, head_dim])?
            .f_to_device(device)?)
    };
    Ok((to(cos)?, to(sin)?))
}

/// `x·cos + rotate_half(x)·sin` over the last axis, with rotate_half(x) = [−x₂, x₁].
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.size()[3] / 2;
    let x1 = x.f_narrow(3, 0, half)?;
    let x2 = x.f_narrow(3, half, half)?;
    let rotated = Tensor::f_cat(&[x2.f_neg()?, x1], 3)?;
    Ok(x.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkloadConfig;

    #[test]
    fn tiny_has_the_expected_parameter_count_and_init() {
        let c = WorkloadConfig::from_preset("tiny").unwrap();
        let specs = param_specs(&c.model);
        assert_eq!(specs.len(), 1 + 2 * 9 + 2);
        let total = parameter_count(&c.model);
        // embed + lm_head + 2 × (2 norms + q,o 128² + k,v 64·128 + 3 · 128·384) + final norm
        let want =
            2 * 1024 * 128 + 2 * (2 * 128 + 2 * 128 * 128 + 2 * 64 * 128 + 3 * 128 * 384) + 128;
        assert_eq!(total, want);
        let o = specs
            .iter()
            .find(|s| s.name.ends_with("0.self_attn.o_proj.weight"))
            .unwrap();
        let v = init_values(o, 7);
        let std = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!(
            (std - 0.01).abs() < 0.0005,
            "o_proj std {std} should be 0.02/√4"
        );
        assert_eq!(init_values(o, 7), v);
        assert_ne!(init_values(o, 8), v);
    }

    #[test]
    fn every_preset_has_its_closed_form_parameter_count() {
        for (preset, want) in [
            ("tiny", 656_000),
            ("small", 31_990_272),
            ("150m", 219_702_272),
            ("1b", 1_137_772_544),
        ] {
            let m = WorkloadConfig::from_preset(preset).unwrap().model;
            assert_eq!(parameter_count(&m), want, "{preset}");
            let embedding: i64 = param_specs(&m)
                .iter()
                .filter(|s| s.is_embedding)
                .map(ParamSpec::numel)
                .sum();
            assert_eq!(
                embedding,
                m.vocab * m.d_model,
                "{preset}: only the input embedding is a lookup"
            );
        }
    }

    #[test]
    fn initial_loss_is_near_ln_vocab() {
        let mut c = WorkloadConfig::from_preset("tiny").unwrap();
        c.seqs_per_window = 2;
        let params = Params::init(&c.model, 1, Device::Cpu).unwrap();
        let corpus = crate::corpus::Corpus::synthetic(&c).unwrap();
        let (x, y) = corpus
            .page(0)
            .unwrap()
            .inputs_and_labels(Device::Cpu)
            .unwrap();
        let (loss, grads) = params.loss_and_grads(&x, &y).unwrap();
        let loss = loss.double_value(&[]);
        assert!((loss - (1024f64).ln()).abs() < 0.1, "loss {loss}");
        assert_eq!(grads.len(), params.tensors.len());
        for (g, s) in grads.iter().zip(&params.specs) {
            assert_eq!(g.size(), s.shape, "{}", s.name);
        }
    }
}

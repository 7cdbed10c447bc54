//! `crusades flops`: the FLOP model of a workload, term by term, so that anyone can check how
//! the MFU numerator is counted before trusting an MFU figure.

use serde::Serialize;

use crusades_reference::config::{ModelConfig, WorkloadConfig};

use crate::flops::{self, FlopModel, Term};
use crate::report;

#[derive(clap::Args)]
pub struct FlopsArgs {
    #[command(flatten)]
    pub workload: super::workload::WorkloadArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document; field names are stable.
#[derive(Serialize)]
struct FlopsReport {
    /// The model-FLOPs convention, [`flops::CONVENTION`].
    convention: &'static str,
    formula: &'static str,
    crusades_convention: &'static str,
    crusades_formula: &'static str,
    preset: String,
    model: ModelConfig,
    head_dim: i64,
    params_total: u64,
    params_embedding: u64,
    terms: Vec<Term>,
    /// Model FLOPs per token, [`flops::CONVENTION`].
    model_per_token: f64,
    /// The Crusades leaderboard's FLOPs per token, 6·N_all.
    crusades_per_token: f64,
    /// crusades_per_token / model_per_token.
    crusades_ratio: f64,
    seqs_per_window: i64,
    tokens_per_window: u64,
    windows: u64,
    /// Training tokens of the workload: tokens_per_window × windows.
    tokens: u64,
    /// Model FLOPs of the workload: model_per_token × tokens.
    model_total: f64,
    /// The Crusades figure of the workload: crusades_per_token × tokens.
    crusades_total: f64,
}

impl FlopsReport {
    fn new(config: &WorkloadConfig) -> Self {
        let m = FlopModel::new(&config.model);
        let tokens_per_window = u64::try_from(config.tokens_per_window()).unwrap_or(0);
        let tokens = tokens_per_window.saturating_mul(config.windows);
        Self {
            convention: flops::CONVENTION,
            formula: flops::CONVENTION_FORMULA,
            crusades_convention: flops::CRUSADES_CONVENTION,
            crusades_formula: flops::CRUSADES_FORMULA,
            preset: config.preset.clone(),
            model: config.model,
            head_dim: config.model.head_dim(),
            params_total: m.params_total,
            params_embedding: m.params_embedding,
            terms: m.terms(),
            model_per_token: m.model_per_token(),
            crusades_per_token: m.crusades_per_token(),
            crusades_ratio: m.crusades_per_token() / m.model_per_token(),
            seqs_per_window: config.seqs_per_window,
            tokens_per_window,
            windows: config.windows,
            tokens,
            model_total: m.model_flops(tokens),
            crusades_total: m.crusades_flops(tokens),
        }
    }
}

pub fn run(args: FlopsArgs) -> anyhow::Result<()> {
    // resolve() also builds the corpus; the synthetic one is a table of vocab×8 successors
    // (instant), and a token file is read and checked against the vocabulary, which keeps the
    // config the same as a bench of the same flags would use.
    let (config, _corpus) = args.workload.resolve()?;
    let r = FlopsReport::new(&config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_table(&r);
    }
    Ok(())
}

fn print_table(r: &FlopsReport) {
    let m = &r.model;
    println!(
        "FLOP model of the {} workload: vocab {}, d_model {}, {} layers, {} heads ({} kv, head \
         dim {}), ffn {}, T {}",
        r.preset, m.vocab, m.d_model, m.layers, m.heads, m.kv_heads, r.head_dim, m.ffn, m.seq_len
    );
    println!(
        "Convention {}: {} model FLOPs per token, forward + backward (PaLM App. B, torchtitan).\n\
         The input embedding is a lookup and does no FLOPs; the lm_head is a matmul and counts;\n\
         causal attention is counted over the full T²; recomputation is never counted.\n",
        r.convention, r.formula
    );

    let rows: Vec<[String; 5]> = r
        .terms
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.formula.clone(),
                t.params
                    .map_or_else(|| "-".into(), |p| report::count(p as f64)),
                report::count(t.flops_per_token),
                report::percent(t.flops_per_token / r.model_per_token),
            ]
        })
        .chain(std::iter::once([
            "total".into(),
            r.formula.into(),
            report::count(r.params_total as f64),
            report::count(r.model_per_token),
            report::percent(1.0),
        ]))
        .collect();
    let header = ["term", "formula", "params", "FLOPs/token", "share"];
    let width = |i: usize| {
        rows.iter()
            .map(|row| row[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..5).map(width).collect();
    let line = |c: &[&str]| {
        println!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
    };
    line(&header);
    for (i, row) in rows.iter().enumerate() {
        if i + 1 == rows.len() {
            println!("  {}", "-".repeat(w.iter().sum::<usize>() + 8));
        }
        line(&row.each_ref().map(String::as_str));
    }

    println!();
    println!(
        "model FLOPs per token ({}):  {}FLOP  ({})",
        r.convention,
        report::si(r.model_per_token),
        report::count(r.model_per_token)
    );
    println!(
        "Crusades FLOPs per token ({}):  {}FLOP  ({}; {:.4}× the model figure)",
        r.crusades_formula,
        report::si(r.crusades_per_token),
        report::count(r.crusades_per_token),
        r.crusades_ratio
    );
    println!(
        "tokens: {} seqs × T {} = {} per window, × {} windows = {}",
        r.seqs_per_window,
        m.seq_len,
        report::count(r.tokens_per_window as f64),
        r.windows,
        report::count(r.tokens as f64)
    );
    println!(
        "model FLOPs of the workload: {}FLOP  (Crusades {}: {}FLOP)",
        report::si(r.model_total),
        r.crusades_formula,
        report::si(r.crusades_total)
    );
}

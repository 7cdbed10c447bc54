//! `crusades ops`: the op registry a submission can call, with each op's FLOP formula.

use serde::Serialize;

use crusades_sandbox::registry::REGISTRY;

#[derive(Serialize)]
struct OpRow {
    name: &'static str,
    signature: String,
    flops: String,
}

pub fn run(json: bool) -> anyhow::Result<()> {
    let rows: Vec<OpRow> = REGISTRY
        .iter()
        .map(|op| OpRow {
            name: op.name,
            signature: op.signature(),
            flops: op.flops.to_string(),
        })
        .collect();
    if json {
        let doc = serde_json::json!({
            "contract_version": crusades_sandbox::CONTRACT_VERSION,
            "ops": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} ops (contract crusades:submission@{}; `?` marks an optional argument)\n",
        rows.len(),
        crusades_sandbox::CONTRACT_VERSION
    );
    let width = rows.iter().map(|r| r.signature.len()).max().unwrap_or(0);
    for r in &rows {
        println!("  {:width$}  FLOPs {}", r.signature, r.flops);
    }
    Ok(())
}

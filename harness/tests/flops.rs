//! `crusades flops`, driven as a user drives it.

mod common;

use common::crusades;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn flops_json_for_1b_matches_the_hand_count() {
    let cache = tempfile::tempdir().unwrap();
    let o = crusades(&["flops", "--preset", "1b", "--json"], cache.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 1b: vocab 32000, d 2048, L 16, H 16, H_kv 8, Q 128, ffn 8192, T 2048.
    // N = 2·(32000·2048) + 16·(2·2048² + 2·2048·1024 + 3·2048·8192 + 2·2048) + 2048
    //   = 1_137_772_544; N_embedding = 65_536_000.
    // 6·(N − N_embedding) + 12·16·16·128·2048 = 6_433_419_264 + 805_306_368.
    assert_eq!(j["model_per_token"].as_f64(), Some(7_238_725_632.0));
    assert_eq!(j["crusades_per_token"].as_f64(), Some(6_826_635_264.0));
    assert_eq!(j["params_total"].as_u64(), Some(1_137_772_544));
    assert_eq!(j["params_embedding"].as_u64(), Some(65_536_000));
    assert_eq!(j["convention"], "palm-torchtitan");
    // 8 sequences × 2048 tokens × 3 windows.
    assert_eq!(j["tokens"].as_u64(), Some(49_152));
    assert_eq!(j["model_total"].as_f64(), Some(7_238_725_632.0 * 49_152.0));
    let terms = j["terms"].as_array().unwrap();
    let sum: f64 = terms
        .iter()
        .map(|t| t["flops_per_token"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, 7_238_725_632.0);
    assert!(terms.iter().any(|t| t["name"] == "lm_head"));
}

#[test]
fn flops_table_names_the_convention_and_every_term() {
    let cache = tempfile::tempdir().unwrap();
    let o = crusades(&["flops", "--preset", "tiny"], cache.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("palm-torchtitan"), "{out}");
    assert!(out.contains("6·(N − N_embedding) + 12·L·H·Q·T"), "{out}");
    for name in [
        "embedding",
        "attn_k",
        "mlp_down",
        "lm_head",
        "attn_scores_values",
    ] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    assert!(
        out.contains("3,542,784"),
        "tiny's model FLOPs per token: {out}"
    );
}

#[test]
fn flops_overrides_apply_and_bad_ones_exit_2() {
    let cache = tempfile::tempdir().unwrap();
    let o = crusades(
        &["flops", "--preset", "tiny", "--set", "layers=4", "--json"],
        cache.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["model"]["layers"], 4);

    let o = crusades(
        &["flops", "--preset", "tiny", "--set", "heads=3"],
        cache.path(),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("heads") && !err.contains("panicked"), "{err}");
}

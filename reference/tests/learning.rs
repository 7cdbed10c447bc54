//! The reference learns: on the `small` model and the synthetic corpus, the loss falls well
//! below ln(vocab). The batch is cut to 2 sequences and 1 peer so the 30 windows fit a CI
//! budget on 2 cores (about a minute); the model, optimiser and compressor are `small`'s.

use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::Corpus;
use crusades_reference::window;
use tch::Device;

#[test]
fn small_learns_the_synthetic_corpus() {
    let mut c = WorkloadConfig::from_preset("small").unwrap();
    c.apply_overrides(&["seqs_per_window=2", "peers=1", "windows=30"])
        .unwrap();
    let corpus = Corpus::synthetic(&c).unwrap();
    let out = window::run(&c, &corpus, Device::Cpu, |_| {}).unwrap();
    let losses: Vec<f64> = out.windows.iter().map(|w| w.loss).collect();
    let ln_vocab = (c.model.vocab as f64).ln();
    let first = losses[0];
    let last5 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    // Measured: 9.11 at the start, 6.1 over the last five windows (ln 8192 = 9.01).
    assert!(
        (first - ln_vocab).abs() < 0.3,
        "the untrained loss {first} should be near ln(vocab) {ln_vocab}"
    );
    assert!(
        last5 < ln_vocab - 1.5,
        "the loss should fall well below ln(vocab) = {ln_vocab:.2}: {losses:?}"
    );
}

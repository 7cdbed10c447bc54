//! Properties of the compressor that must hold for any shape and any values.

use crusades_reference::compress::{Compressor, CompressorConfig};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

fn shape() -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        (1i64..300).prop_map(|n| vec![n]),
        (1i64..160, 1i64..160).prop_map(|(r, c)| vec![r, c]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn uploads_are_well_formed_and_decode_back_towards_the_input(
        shape in shape(),
        seed in 0i64..1000,
        scale in prop_oneof![Just(1e-6f64), Just(1.0), Just(1e3)],
        topk in 1i64..40,
        chunk in prop_oneof![Just(64i64), Just(16), Just(7)],
    ) {
        let config = CompressorConfig { topk, chunk, ..CompressorConfig::default() };
        let mut c = Compressor::new(config, Device::Cpu);
        tch::manual_seed(seed);
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * scale;
        let ct = c.compress(&x).unwrap();
        let g = &ct.geometry;
        prop_assert_eq!(g.chunks() * g.chunk_len(), x.numel() as i64);
        prop_assert_eq!(ct.k(), topk.min(g.chunk_len()));
        ct.validate("x", config.bins).unwrap();

        // Indices within a chunk are distinct and ascending.
        let idx = Vec::<i64>::try_from(&ct.idx.flatten(0, -1)).unwrap();
        for row in idx.chunks(ct.k() as usize) {
            prop_assert!(row.windows(2).all(|w| w[0] < w[1]), "{:?}", row);
        }

        // Dequantised values lie within the selected values' range, up to rounding.
        let coeffs = c.encode(&x, g).unwrap();
        let selected = coeffs.gather(-1, &ct.idx, false);
        let deq = c.dequantize(&ct).unwrap();
        let (lo, hi) = (selected.min().double_value(&[]), selected.max().double_value(&[]));
        let slack = 1e-5 * (hi - lo).abs().max(lo.abs()).max(hi.abs());
        prop_assert!(deq.min().double_value(&[]) >= lo - slack);
        prop_assert!(deq.max().double_value(&[]) <= hi + slack);

        // Keeping every coefficient loses only quantisation: the decode is close to x.
        if ct.k() == g.chunk_len() {
            let back = c.decode_upload(&ct).unwrap();
            let rel = (&back - &x).norm().double_value(&[]) / x.norm().double_value(&[]).max(1e-30);
            prop_assert!(rel < 0.1, "relative error {}", rel);
        }

        // The transmitted part never points against the input: ⟨decode, x⟩ ≥ 0.
        let back = c.decode_upload(&ct).unwrap();
        let dot = (&back * &x).sum(Kind::Double).double_value(&[]);
        prop_assert!(dot >= -1e-6 * x.norm().double_value(&[]).powi(2), "dot {}", dot);
    }
}

//! Weights as `SubtensorModule.set_weights` takes them: u16, max-normalised the way Bittensor's
//! `convert_weights_and_uids_for_emit` does. The largest weight becomes 65535, every other
//! `round(w / max · 65535)`, and a uid whose weight rounds to 0 is left out.

/// A weight vector the chain cannot take.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    #[error("{uids} uids but {weights} weights")]
    Lengths { uids: usize, weights: usize },
    #[error("uid {uid} has the weight {weight}; weights must be finite and ≥ 0")]
    Bad { uid: u16, weight: f64 },
    #[error("uid {0} appears more than once")]
    Duplicate(u16),
}

/// `(dests, weights)` for `set_weights`. All zero gives two empty lists, as in Bittensor.
pub fn to_u16(uids: &[u16], weights: &[f64]) -> Result<(Vec<u16>, Vec<u16>), WeightsError> {
    if uids.len() != weights.len() {
        return Err(WeightsError::Lengths {
            uids: uids.len(),
            weights: weights.len(),
        });
    }
    for (i, (&uid, &weight)) in uids.iter().zip(weights).enumerate() {
        if !weight.is_finite() || weight < 0.0 {
            return Err(WeightsError::Bad { uid, weight });
        }
        if uids[..i].contains(&uid) {
            return Err(WeightsError::Duplicate(uid));
        }
    }
    let max = weights.iter().copied().fold(0.0, f64::max);
    if max == 0.0 {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok(uids
        .iter()
        .zip(weights)
        .filter_map(|(&uid, &w)| {
            let v = (w / max * f64::from(u16::MAX)).round() as u16;
            (v != 0).then_some((uid, v))
        })
        .unzip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn winner_takes_all_with_burn_encodes_like_bittensor() {
        // 0.05 / 0.95 · 65535 = 3449.2 → 3449.
        assert_eq!(
            to_u16(&[1, 7], &[0.95, 0.05]).unwrap(),
            (vec![1, 7], vec![65535, 3449])
        );
        assert_eq!(to_u16(&[1], &[1.0]).unwrap(), (vec![1], vec![65535]));
        assert_eq!(
            to_u16(&[3, 4], &[1.0, 1e-6]).unwrap(),
            (vec![3], vec![65535])
        );
        assert_eq!(to_u16(&[3, 4], &[0.0, 0.0]).unwrap(), (vec![], vec![]));
        assert!(matches!(
            to_u16(&[1, 2], &[1.0]),
            Err(WeightsError::Lengths { .. })
        ));
        assert!(matches!(
            to_u16(&[1, 2], &[1.0, f64::NAN]),
            Err(WeightsError::Bad { uid: 2, .. })
        ));
        assert!(matches!(
            to_u16(&[1, 2], &[1.0, -0.5]),
            Err(WeightsError::Bad { uid: 2, .. })
        ));
        assert!(matches!(
            to_u16(&[1, 1], &[1.0, 0.5]),
            Err(WeightsError::Duplicate(1))
        ));
    }

    proptest! {
        #[test]
        fn the_largest_is_65535_and_the_order_is_kept(ws in proptest::collection::vec(0.0f64..1e6, 1..50)) {
            let uids: Vec<u16> = (0..ws.len() as u16).collect();
            let (dests, vals) = to_u16(&uids, &ws).unwrap();
            prop_assert_eq!(dests.len(), vals.len());
            if ws.iter().any(|&w| w > 0.0) {
                prop_assert_eq!(vals.iter().copied().max(), Some(u16::MAX));
            }
            for (d, v) in dests.iter().zip(&vals) {
                let expected = (ws[*d as usize] / ws.iter().copied().fold(0.0, f64::max) * 65535.0).round();
                prop_assert_eq!(f64::from(*v), expected);
                prop_assert!(*v > 0);
            }
            prop_assert!(dests.windows(2).all(|p| p[0] < p[1]));
        }
    }
}

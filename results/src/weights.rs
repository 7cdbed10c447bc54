//! Crusades' weights: winner-takes-all with burn. The leader's uid gets `1 − burn_rate`, the
//! burn uid the rest; with no leader (or a leader whose uid is unknown) the burn uid takes
//! everything. Zero weights are left out, so the vector is what `set_weights` would be sent.

use serde::{Deserialize, Serialize};

use crate::leaderboard::Leaderboard;

/// Where the burn goes and how much of the emission it takes. The defaults are Crusades':
/// uid 1 and 95 %.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightsRule {
    pub burn_uid: u16,
    pub burn_rate: f64,
}

impl Default for WeightsRule {
    fn default() -> Self {
        WeightsRule {
            burn_uid: 1,
            burn_rate: 0.95,
        }
    }
}

impl WeightsRule {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.burn_rate) {
            return Err(format!(
                "the burn rate must be within 0…1 (got {})",
                self.burn_rate
            ));
        }
        Ok(())
    }
}

/// The weights to set: parallel uid and weight lists that sum to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightVector {
    pub uids: Vec<u16>,
    pub weights: Vec<f64>,
    /// The leader the non-burn share goes to, if any.
    pub winner_sha256: Option<String>,
    /// Why everything goes to the burn uid, when it does.
    pub note: Option<String>,
}

/// The weight vector for a leaderboard.
pub fn weights_for(board: &Leaderboard, rule: &WeightsRule) -> WeightVector {
    let burn_only = |note: &str| WeightVector {
        uids: vec![rule.burn_uid],
        weights: vec![1.0],
        winner_sha256: None,
        note: Some(note.to_string()),
    };
    let Some(leader) = &board.leader else {
        return burn_only("no accepted submission: everything to the burn uid");
    };
    let uid = board
        .standings
        .iter()
        .find(|s| s.sha256 == leader.sha256)
        .and_then(|s| s.uid);
    let Some(uid) = uid else {
        return burn_only("the leader's uid is unknown: everything to the burn uid");
    };
    let mut v = WeightVector {
        uids: Vec::new(),
        weights: Vec::new(),
        winner_sha256: Some(leader.sha256.clone()),
        note: None,
    };
    if uid == rule.burn_uid {
        v.uids.push(uid);
        v.weights.push(1.0);
        v.note = Some("the leader is the burn uid".into());
        return v;
    }
    for (u, w) in [(rule.burn_uid, rule.burn_rate), (uid, 1.0 - rule.burn_rate)] {
        if w > 0.0 {
            v.uids.push(u);
            v.weights.push(w);
        }
    }
    v
}

/// One weight vector, as computed (and, by the validator, set on chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsEntry {
    /// The store's row id; None before it is stored.
    pub id: Option<i64>,
    pub competition: String,
    pub block: u64,
    pub at: String,
    pub uids: Vec<u16>,
    pub weights: Vec<f64>,
    pub leader_sha256: Option<String>,
    /// T at `block`.
    pub threshold: f64,
    /// `computed`, `dry-run` or `set` (on chain).
    pub source: String,
}

impl WeightsEntry {
    /// The history row for `vector`, computed from `board`, as of now; `source` says what
    /// became of it (`computed`, `dry-run` or `set`).
    pub fn new(board: &Leaderboard, vector: &WeightVector, source: &str) -> WeightsEntry {
        WeightsEntry {
            id: None,
            competition: board.competition.clone(),
            block: board.block,
            at: crate::time::rfc3339(std::time::SystemTime::now()),
            uids: vector.uids.clone(),
            weights: vector.weights.clone(),
            leader_sha256: vector.winner_sha256.clone(),
            threshold: board.threshold,
            source: source.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderboard::{LeaderState, Standing, ThresholdRule};

    fn board(leader_uid: Option<Option<u16>>) -> Leaderboard {
        let leader = leader_uid.map(|_| LeaderState {
            sha256: "aa".into(),
            score: 0.4,
            threshold: 0.01,
            crowned_block: 0,
            crowned_at: String::new(),
        });
        let standings = leader_uid
            .map(|uid| Standing {
                rank: 1,
                sha256: "aa".into(),
                hotkey: None,
                uid,
                score: 0.4,
                accepted: 1,
                evaluations: 1,
                score_min: 0.4,
                score_max: 0.4,
                first_seen_block: 0,
                first_seen_at: String::new(),
                leader: true,
            })
            .into_iter()
            .collect();
        Leaderboard {
            competition: "c".into(),
            block: 0,
            rule: ThresholdRule::default(),
            threshold: 0.01,
            leader,
            to_beat: None,
            standings,
            unranked: 0,
        }
    }

    #[test]
    fn winner_takes_the_unburnt_share() {
        let v = weights_for(&board(Some(Some(7))), &WeightsRule::default());
        assert_eq!(v.uids, [1, 7]);
        assert!((v.weights[0] - 0.95).abs() < 1e-12 && (v.weights[1] - 0.05).abs() < 1e-12);
        assert_eq!(v.winner_sha256.as_deref(), Some("aa"));
        let sum: f64 = v.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn everything_burns_without_a_payable_winner() {
        for b in [board(None), board(Some(None))] {
            let v = weights_for(&b, &WeightsRule::default());
            assert_eq!((v.uids, v.weights), (vec![1], vec![1.0]));
            assert!(v.note.is_some());
        }
    }

    #[test]
    fn edge_rates_and_a_burn_uid_winner() {
        let all = WeightsRule {
            burn_uid: 1,
            burn_rate: 0.0,
        };
        let v = weights_for(&board(Some(Some(7))), &all);
        assert_eq!((v.uids, v.weights), (vec![7], vec![1.0]));
        let none = WeightsRule {
            burn_uid: 1,
            burn_rate: 1.0,
        };
        let v = weights_for(&board(Some(Some(7))), &none);
        assert_eq!((v.uids, v.weights), (vec![1], vec![1.0]));
        let v = weights_for(&board(Some(Some(1))), &WeightsRule::default());
        assert_eq!((v.uids, v.weights), (vec![1], vec![1.0]));
        assert!(WeightsRule {
            burn_uid: 1,
            burn_rate: 1.5
        }
        .check()
        .is_err());
    }
}

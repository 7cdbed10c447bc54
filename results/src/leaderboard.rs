//! The leaderboard and Crusades' adaptive threshold (../shared/DESIGN.md, "Chain").
//!
//! A submission's score is the median of its accepted evaluations (several validators, or
//! re-runs), and the table ranks submissions by it. The *leader* is not simply the top row:
//! a later submission displaces the leader only if it beats `leader·(1 + T)`, where T is the
//! adaptive threshold. A new leader sets `T = max(base, (new − old)/old)`, and T decays back
//! toward base as `base + (T − base)·(1 − decay)^(blocks/interval)`.
//!
//! The leader is *state*, kept in the store and advanced one evaluation at a time, and never
//! recomputed from the table. Crusades recomputed it: it replayed every submission in arrival
//! order against the current T, and the T that a new leader had just set then made that same
//! leader fail to beat its predecessor, so it was dethroned by its own threshold.
//! `tests::own_threshold_never_dethrones_the_leader` pins this.

use serde::{Deserialize, Serialize};

use crate::record::Record;
use crate::store::{EvaluationMeta, Ledger, Store, StoreError};

/// Which leaderboard a record competes on: scores are only comparable for the same contract,
/// the same workload preset and the same kind of device.
pub fn competition_of(record: &Record) -> String {
    let device = if record.workload.device.starts_with("cuda") {
        "cuda"
    } else {
        record.workload.device.as_str()
    };
    format!(
        "{}/{}/{}",
        record.harness.contract_version, record.workload.preset, device
    )
}

/// The adaptive threshold's parameters. The defaults are Crusades' (`adaptive_threshold` in
/// its hparams): base 1 %, 5 % decay per 100 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// The floor T decays to, and the T a first leader sets.
    pub base: f64,
    /// The share of `T − base` lost per interval.
    pub decay: f64,
    pub interval_blocks: u64,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        ThresholdRule {
            base: 0.01,
            decay: 0.05,
            interval_blocks: 100,
        }
    }
}

impl ThresholdRule {
    /// Why the rule is unusable, if it is.
    pub fn check(&self) -> Result<(), String> {
        if !(self.base.is_finite() && self.base >= 0.0) {
            return Err(format!(
                "the base threshold must be ≥ 0 (got {})",
                self.base
            ));
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(format!("the decay must be within 0…1 (got {})", self.decay));
        }
        if self.interval_blocks == 0 {
            return Err("the decay interval must be at least one block".into());
        }
        Ok(())
    }

    /// T at `block`, for a T of `set` at `set_block`. The exponent is fractional: T decays a
    /// little every block rather than in steps every interval. A block before `set_block`
    /// sees T undecayed.
    pub fn at(&self, set: f64, set_block: u64, block: u64) -> f64 {
        let intervals = block.saturating_sub(set_block) as f64 / self.interval_blocks as f64;
        self.base + (set - self.base) * (1.0 - self.decay).powf(intervals)
    }

    /// The T a new leader of score `new` sets over a predecessor of score `old`.
    pub fn after_crowning(&self, new: f64, old: Option<f64>) -> f64 {
        match old {
            Some(old) if old > 0.0 => self.base.max((new - old) / old),
            _ => self.base,
        }
    }
}

/// The leader of one competition, as kept between evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderState {
    pub sha256: String,
    /// The leader's score now (its median over accepted evaluations).
    pub score: f64,
    /// T as set when it was crowned; it decays from `crowned_block`.
    pub threshold: f64,
    pub crowned_block: u64,
    pub crowned_at: String,
}

/// One change of leader, for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderChange {
    pub competition: String,
    pub block: u64,
    pub at: String,
    pub sha256: String,
    pub score: f64,
    pub previous_sha256: Option<String>,
    pub previous_score: Option<f64>,
    /// The T the new leader set.
    pub threshold: f64,
}

/// What the store knows of one submission in one competition: the leaderboard's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionScores {
    pub sha256: String,
    pub hotkey: Option<String>,
    pub uid: Option<u16>,
    pub first_seen_block: u64,
    pub first_seen_at: String,
    /// Scores (median MFU) of its accepted evaluations, oldest first.
    pub accepted: Vec<f64>,
    /// All its evaluations in this competition, accepted or not.
    pub evaluations: u64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    pub rank: u32,
    pub sha256: String,
    pub hotkey: Option<String>,
    pub uid: Option<u16>,
    /// The median of its accepted evaluations' scores.
    pub score: f64,
    pub accepted: u64,
    pub evaluations: u64,
    pub score_min: f64,
    pub score_max: f64,
    pub first_seen_block: u64,
    pub first_seen_at: String,
    pub leader: bool,
}

/// The leaderboard of one competition as of one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub competition: String,
    pub block: u64,
    pub rule: ThresholdRule,
    /// T at `block`.
    pub threshold: f64,
    pub leader: Option<LeaderState>,
    /// The score a challenger must exceed: `leader·(1 + T(block))`.
    pub to_beat: Option<f64>,
    /// Submissions with at least one accepted evaluation, best first.
    pub standings: Vec<Standing>,
    /// Submissions evaluated in this competition but never accepted.
    pub unranked: u64,
}

/// The median; the mean of the middle two for an even count. None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Ranks the submissions that have an accepted evaluation: by median score, then the earlier
/// first seen, then the hash, so the order is total and stable.
pub fn rank(scores: &[SubmissionScores], leader: Option<&str>) -> Vec<Standing> {
    let mut rows: Vec<Standing> = scores
        .iter()
        .filter_map(|s| {
            let score = median(&s.accepted)?;
            let finite = s.accepted.iter().copied().filter(|x| x.is_finite());
            Some(Standing {
                rank: 0,
                sha256: s.sha256.clone(),
                hotkey: s.hotkey.clone(),
                uid: s.uid,
                score,
                accepted: s.accepted.len() as u64,
                evaluations: s.evaluations,
                score_min: finite.clone().fold(f64::INFINITY, f64::min),
                score_max: finite.fold(f64::NEG_INFINITY, f64::max),
                first_seen_block: s.first_seen_block,
                first_seen_at: s.first_seen_at.clone(),
                leader: leader == Some(s.sha256.as_str()),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.first_seen_block.cmp(&b.first_seen_block))
            .then(a.sha256.cmp(&b.sha256))
    });
    for (i, row) in rows.iter_mut().enumerate() {
        row.rank = i as u32 + 1;
    }
    rows
}

/// The leader state after one step at `block`: the leader's score follows its own
/// re-evaluations (its T does not change), and the best other submission takes over if it
/// exceeds `leader·(1 + T(block))`. Without a leader, the best submission becomes leader at
/// T = base.
pub fn advance(
    state: Option<LeaderState>,
    scores: &[SubmissionScores],
    competition: &str,
    block: u64,
    at: &str,
    rule: &ThresholdRule,
) -> (Option<LeaderState>, Option<LeaderChange>) {
    let table = rank(scores, state.as_ref().map(|s| s.sha256.as_str()));
    let mut state = state;
    if let Some(leader) = state.as_mut() {
        if let Some(own) = table.iter().find(|r| r.sha256 == leader.sha256) {
            leader.score = own.score;
        }
    }
    let Some(best) = table
        .iter()
        .find(|r| Some(r.sha256.as_str()) != state.as_ref().map(|s| s.sha256.as_str()))
    else {
        return (state, None);
    };
    let previous = state.as_ref().map(|s| (s.sha256.clone(), s.score));
    let crowned = match &state {
        None => true,
        Some(leader) => {
            let t = rule.at(leader.threshold, leader.crowned_block, block);
            best.score > leader.score * (1.0 + t)
        }
    };
    if !crowned {
        return (state, None);
    }
    let threshold = rule.after_crowning(best.score, previous.as_ref().map(|p| p.1));
    let new = LeaderState {
        sha256: best.sha256.clone(),
        score: best.score,
        threshold,
        crowned_block: block,
        crowned_at: at.to_string(),
    };
    let change = LeaderChange {
        competition: competition.to_string(),
        block,
        at: at.to_string(),
        sha256: best.sha256.clone(),
        score: best.score,
        previous_sha256: previous.as_ref().map(|p| p.0.clone()),
        previous_score: previous.map(|p| p.1),
        threshold,
    };
    (Some(new), Some(change))
}

/// The leaderboard of `competition` as of `block`. The kept leader state is advanced to
/// `block` in memory (T's decay may let a challenger through) but not stored: reading
/// changes nothing. [`import`] and [`settle`] store.
pub fn leaderboard(
    ledger: &Ledger<'_>,
    competition: &str,
    block: u64,
    rule: &ThresholdRule,
) -> Result<Leaderboard, StoreError> {
    let scores = ledger.scores(competition)?;
    let kept = ledger.leader(competition)?;
    let at = crate::time::rfc3339(std::time::SystemTime::now());
    let (leader, _) = advance(kept, &scores, competition, block, &at, rule);
    Ok(board(competition, block, rule, leader, &scores))
}

fn board(
    competition: &str,
    block: u64,
    rule: &ThresholdRule,
    leader: Option<LeaderState>,
    scores: &[SubmissionScores],
) -> Leaderboard {
    let standings = rank(scores, leader.as_ref().map(|l| l.sha256.as_str()));
    let threshold = leader
        .as_ref()
        .map_or(rule.base, |l| rule.at(l.threshold, l.crowned_block, block));
    let to_beat = leader.as_ref().map(|l| l.score * (1.0 + threshold));
    Leaderboard {
        competition: competition.to_string(),
        block,
        rule: *rule,
        threshold,
        to_beat,
        unranked: scores.len() as u64 - standings.len() as u64,
        standings,
        leader,
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Imported {
    pub id: i64,
    pub sha256: String,
    pub competition: String,
    pub block: u64,
    /// The same record was already in the store; nothing changed.
    pub duplicate: bool,
    pub new_submission: bool,
    /// The change of leader this evaluation caused, if any.
    pub leader_change: Option<LeaderChange>,
}

/// Stores one evaluation and advances its competition's leader, in one transaction: the
/// record, the leader state and its history land together or not at all.
pub fn import(
    store: &mut Store,
    record: &Record,
    meta: &EvaluationMeta,
    rule: &ThresholdRule,
) -> Result<Imported, StoreError> {
    store.write(|ledger| {
        let inserted = ledger.insert_evaluation(record, meta)?;
        let competition = competition_of(record);
        let leader_change = if inserted.duplicate {
            None
        } else {
            step(
                ledger,
                &competition,
                inserted.block,
                &record.created_at,
                rule,
            )?
            .change
        };
        Ok(Imported {
            id: inserted.id,
            sha256: record.submission.sha256.clone(),
            competition,
            block: inserted.block,
            duplicate: inserted.duplicate,
            new_submission: inserted.new_submission,
            leader_change,
        })
    })
}

/// Advances the kept leader state of `competition` to `block` and stores it: what a
/// validator does before it sets weights, so that T's decay can crown a waiting challenger.
pub fn settle(
    store: &mut Store,
    competition: &str,
    block: u64,
    rule: &ThresholdRule,
) -> Result<Leaderboard, StoreError> {
    store.write(|ledger| {
        let at = crate::time::rfc3339(std::time::SystemTime::now());
        let stepped = step(ledger, competition, block, &at, rule)?;
        Ok(board(
            competition,
            block,
            rule,
            stepped.state,
            &stepped.scores,
        ))
    })
}

/// The leader state after [`step`], the scores it was computed from, and the change, if any.
struct Stepped {
    state: Option<LeaderState>,
    scores: Vec<SubmissionScores>,
    change: Option<LeaderChange>,
}

fn step(
    ledger: &Ledger<'_>,
    competition: &str,
    block: u64,
    at: &str,
    rule: &ThresholdRule,
) -> Result<Stepped, StoreError> {
    let scores = ledger.scores(competition)?;
    let kept = ledger.leader(competition)?;
    let (state, change) = advance(kept.clone(), &scores, competition, block, at, rule);
    if state != kept {
        match &state {
            Some(s) => ledger.put_leader(competition, s)?,
            None => ledger.clear_leader(competition)?,
        }
    }
    if let Some(c) = &change {
        ledger.append_leader_change(c)?;
    }
    Ok(Stepped {
        state,
        scores,
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: &str = "0.2.0/tiny/cpu";

    fn sub(sha: &str, block: u64, accepted: &[f64]) -> SubmissionScores {
        SubmissionScores {
            sha256: sha.into(),
            hotkey: None,
            uid: Some(block as u16),
            first_seen_block: block,
            first_seen_at: String::new(),
            accepted: accepted.to_vec(),
            evaluations: accepted.len() as u64,
        }
    }

    fn leader_of(state: &Option<LeaderState>) -> &str {
        state.as_ref().map_or("", |s| s.sha256.as_str())
    }

    #[test]
    fn threshold_decays_toward_base() {
        let rule = ThresholdRule::default();
        assert_eq!(rule.at(0.5, 1000, 1000), 0.5);
        assert_eq!(rule.at(0.5, 1000, 900), 0.5);
        let one = rule.at(0.5, 1000, 1100);
        assert!((one - (0.01 + 0.49 * 0.95)).abs() < 1e-12, "{one}");
        let ten = rule.at(0.5, 0, 1000);
        assert!((ten - (0.01 + 0.49 * 0.95f64.powi(10))).abs() < 1e-12);
        assert!((rule.at(0.5, 0, 10_000_000) - 0.01).abs() < 1e-12);
        assert_eq!(rule.after_crowning(15.0, Some(10.0)), 0.5);
        assert_eq!(rule.after_crowning(10.05, Some(10.0)), 0.01);
        assert_eq!(rule.after_crowning(3.0, None), 0.01);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn first_accepted_submission_leads_at_base() {
        let rule = ThresholdRule::default();
        let (state, change) = advance(None, &[sub("a", 10, &[0.3])], C, 10, "t", &rule);
        assert_eq!(leader_of(&state), "a");
        let change = change.unwrap();
        assert_eq!(change.threshold, rule.base);
        assert_eq!(change.previous_sha256, None);
        // Never accepted: no leader.
        let (state, change) = advance(None, &[sub("b", 10, &[])], C, 10, "t", &rule);
        assert!(state.is_none() && change.is_none());
    }

    #[test]
    fn a_challenger_must_clear_the_threshold() {
        let rule = ThresholdRule::default();
        let (state, _) = advance(None, &[sub("a", 1, &[10.0])], C, 1, "t", &rule);
        // 10.09 < 10·1.01: a snipe by less than T does not take over.
        let both = [sub("a", 1, &[10.0]), sub("b", 2, &[10.09])];
        let (state, change) = advance(state, &both, C, 2, "t", &rule);
        assert_eq!(leader_of(&state), "a");
        assert!(change.is_none());
        // 10.2 > 10.1 does, and sets T = max(base, 2 %).
        let both = [sub("a", 1, &[10.0]), sub("b", 2, &[10.2])];
        let (state, change) = advance(state, &both, C, 3, "t", &rule);
        assert_eq!(leader_of(&state), "b");
        let change = change.unwrap();
        assert!((change.threshold - 0.02).abs() < 1e-12);
        assert_eq!(change.previous_sha256.as_deref(), Some("a"));
        assert_eq!(change.previous_score, Some(10.0));
    }

    /// Crusades' leaderboard winner: every submission in arrival order against the *current*
    /// T. Kept here only to show what the kept state prevents.
    fn crusades_recomputed_winner(scores: &[SubmissionScores], t: f64) -> &str {
        let mut order: Vec<&SubmissionScores> = scores.iter().collect();
        order.sort_by_key(|s| s.first_seen_block);
        let mut winner: Option<(&str, f64)> = None;
        for s in order {
            let score = median(&s.accepted).unwrap();
            if winner.is_none_or(|(_, w)| score > w * (1.0 + t)) {
                winner = Some((&s.sha256, score));
            }
        }
        winner.unwrap().0
    }

    #[test]
    fn own_threshold_never_dethrones_the_leader() {
        let rule = ThresholdRule::default();
        let (state, _) = advance(None, &[sub("old", 100, &[10.0])], C, 100, "t", &rule);
        // "new" beats "old" by 50 % and sets T = 0.5.
        let both = [sub("old", 100, &[10.0]), sub("new", 200, &[15.0])];
        let (state, change) = advance(state, &both, C, 200, "t", &rule);
        assert_eq!(leader_of(&state), "new");
        let t = change.unwrap().threshold;
        assert_eq!(t, 0.5);
        // Recomputing from the table with the new T hands the lead back to "old": 15 is not
        // above 10·1.5. That was Crusades' bug.
        assert_eq!(crusades_recomputed_winner(&both, t), "old");
        // The kept state does not: at the same block, and at every later one, "new" leads.
        let mut state = state;
        for block in [200, 201, 250, 300, 1_000, 100_000] {
            let (next, change) = advance(state.clone(), &both, C, block, "t", &rule);
            assert_eq!(leader_of(&next), "new", "at block {block}");
            assert!(change.is_none());
            state = next;
        }
        assert_eq!(state.unwrap().threshold, 0.5);
    }

    #[test]
    fn decay_lets_a_waiting_challenger_through() {
        let rule = ThresholdRule::default();
        let (state, _) = advance(None, &[sub("a", 0, &[10.0])], C, 0, "t", &rule);
        let two = [sub("a", 0, &[10.0]), sub("b", 1, &[20.0])];
        let (state, _) = advance(state, &two, C, 1, "t", &rule);
        assert_eq!(state.as_ref().unwrap().threshold, 1.0);
        // "c" at 30 needs > 20·(1 + T): at block 1 T = 1.0 (needs 40), so no.
        let three = [
            sub("a", 0, &[10.0]),
            sub("b", 1, &[20.0]),
            sub("c", 2, &[30.0]),
        ];
        let (state, change) = advance(state, &three, C, 2, "t", &rule);
        assert_eq!(leader_of(&state), "b");
        assert!(change.is_none());
        // T = 0.01 + 0.99·0.95^k < 0.5 once k > 13.2 intervals (1320 blocks).
        let (held, _) = advance(state.clone(), &three, C, 1_300, "t", &rule);
        assert_eq!(leader_of(&held), "b");
        let (taken, change) = advance(state, &three, C, 1_400, "t", &rule);
        assert_eq!(leader_of(&taken), "c");
        assert!((change.unwrap().threshold - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_leaders_own_reevaluation_moves_its_score_not_its_threshold() {
        let rule = ThresholdRule::default();
        let (state, _) = advance(None, &[sub("a", 0, &[10.0])], C, 0, "t", &rule);
        let (state, change) = advance(state, &[sub("a", 0, &[10.0, 8.0, 9.0])], C, 5, "t", &rule);
        let s = state.unwrap();
        assert!(change.is_none());
        assert_eq!((s.score, s.threshold, s.crowned_block), (9.0, 0.01, 0));
    }

    #[test]
    fn ranking_is_by_median_then_first_seen() {
        let table = rank(
            &[
                sub("late", 9, &[5.0, 5.0]),
                sub("early", 1, &[5.0]),
                sub("top", 5, &[1.0, 9.0, 8.0]),
                sub("none", 2, &[]),
            ],
            Some("early"),
        );
        let order: Vec<_> = table.iter().map(|r| (r.rank, r.sha256.as_str())).collect();
        assert_eq!(order, [(1, "top"), (2, "early"), (3, "late")]);
        assert_eq!(
            (table[0].score, table[0].score_min, table[0].score_max),
            (8.0, 1.0, 9.0)
        );
        assert!(table[1].leader && !table[0].leader);
    }

    proptest! {
        /// Whatever arrives in whatever order: the leader always has an accepted score, T
        /// never drops below base, and each change of leader beat its predecessor by more
        /// than the T in force at that block.
        #[test]
        fn leader_invariants(arrivals in proptest::collection::vec((0usize..6, 0.01f64..1.0, 0u64..500), 1..40)) {
            let rule = ThresholdRule::default();
            let mut subs: Vec<SubmissionScores> = Vec::new();
            let mut state: Option<LeaderState> = None;
            let mut block = 0;
            for (who, score, gap) in arrivals {
                block += gap;
                let sha = format!("s{who}");
                match subs.iter_mut().find(|s| s.sha256 == sha) {
                    Some(s) => { s.accepted.push(score); s.evaluations += 1; }
                    None => subs.push(sub(&sha, block, &[score])),
                }
                let before = state.clone();
                let (next, change) = advance(state, &subs, C, block, "t", &rule);
                let leader = next.as_ref().unwrap();
                let own = subs.iter().find(|s| s.sha256 == leader.sha256).unwrap();
                prop_assert_eq!(Some(leader.score), median(&own.accepted));
                prop_assert!(leader.threshold >= rule.base);
                if let (Some(change), Some(prev)) = (&change, &before) {
                    let prev_score = subs.iter().find(|s| s.sha256 == prev.sha256).and_then(|s| median(&s.accepted)).unwrap();
                    let t = rule.at(prev.threshold, prev.crowned_block, block);
                    prop_assert!(change.score > prev_score * (1.0 + t));
                    prop_assert!(change.sha256 != prev.sha256);
                }
                if change.is_none() {
                    prop_assert_eq!(before.map(|b| b.sha256), Some(leader.sha256.clone()));
                }
                state = next;
            }
        }
    }
}

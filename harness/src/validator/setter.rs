//! One weights step, shared by the daemon and `crusades chain weights`: settle the
//! leaderboard at the chain's block, give the winner's share to the uid its hotkey holds now,
//! encode the weights as u16, and send `set_weights` (or print it, in a dry run). The vector
//! lands in the store's weights history either way.

use crusades_results::leaderboard::{self, Leaderboard, ThresholdRule};
use crusades_results::store::{Store, StoreError};
use crusades_results::weights::{self, WeightVector, WeightsEntry, WeightsRule};
use serde::Serialize;

use crate::chain::client::{self, ChainError, Inclusion, Metagraph, Subtensor};
use crate::chain::keys::Hotkey;
use crate::chain::weights::to_u16;

pub struct WeightsParams<'a> {
    pub netuid: u16,
    pub competition: &'a str,
    pub threshold: ThresholdRule,
    pub burn: WeightsRule,
    pub version_key: u64,
}

/// What one step computed and did.
#[derive(Debug, Clone, Serialize)]
pub struct WeightsOutcome {
    pub competition: String,
    pub block: u64,
    pub netuid: u16,
    pub weights: WeightVector,
    pub uids: Vec<u16>,
    pub weights_u16: Vec<u16>,
    pub version_key: u64,
    pub call: String,
    /// The SCALE-encoded call, hex.
    pub call_data: String,
    pub dry_run: bool,
    /// The included extrinsic (None in a dry run).
    pub inclusion: Option<Inclusion>,
    /// The weights history row it was recorded as.
    pub recorded_id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the weights cannot be encoded: {0}")]
    Encode(String),
}

/// Gives each standing the uid its hotkey holds in `metagraph` now: uids are recycled, so the
/// uid an evaluation was stored with may belong to someone else by the time weights are set.
/// A hotkey no longer registered has no uid (its share goes to the burn uid).
pub fn remap_uids(board: &mut Leaderboard, metagraph: &Metagraph) {
    for s in &mut board.standings {
        s.uid = s.hotkey.as_deref().and_then(|h| metagraph.uid_of(h));
    }
}

/// Settles, computes and encodes; signs and sends unless `signer` is None (a dry run).
pub async fn set_weights_once(
    chain: &Subtensor,
    store: &mut Store,
    params: &WeightsParams<'_>,
    signer: Option<&Hotkey>,
) -> Result<WeightsOutcome, WeightsError> {
    let block = chain.block().await?;
    let metagraph = chain.metagraph(params.netuid).await?;
    let mut board = leaderboard::settle(store, params.competition, block, &params.threshold)?;
    remap_uids(&mut board, &metagraph);
    let vector = weights::weights_for(&board, &params.burn);
    let (uids, weights_u16) =
        to_u16(&vector.uids, &vector.weights).map_err(|e| WeightsError::Encode(e.to_string()))?;
    let call = client::set_weights_call(params.netuid, &uids, &weights_u16, params.version_key);
    let call_data = hex::encode(chain.call_data(&call).await?);
    let inclusion = match signer {
        Some(key) => Some(chain.submit(&call, key).await?),
        None => None,
    };
    let source = if inclusion.is_some() {
        "set"
    } else {
        "dry-run"
    };
    let entry = WeightsEntry::new(&board, &vector, source);
    let recorded_id = store.write(|ledger| ledger.append_weights(&entry))?;
    Ok(WeightsOutcome {
        competition: params.competition.to_string(),
        block,
        netuid: params.netuid,
        weights: vector,
        call: format!(
            "SubtensorModule.set_weights(netuid: {}, dests: {:?}, weights: {:?}, version_key: {})",
            params.netuid, uids, weights_u16, params.version_key
        ),
        uids,
        weights_u16,
        version_key: params.version_key,
        call_data: format!("0x{call_data}"),
        dry_run: signer.is_none(),
        inclusion,
        recorded_id,
    })
}

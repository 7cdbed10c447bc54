//! The subtensor client: subxt's dynamic API over its legacy RPC backend.
//!
//! Dynamic, because the metadata is read from the node at connect time: a runtime upgrade that
//! keeps the calls' shapes needs no rebuild. Legacy RPC, because the `chainHead`/
//! `transactionWatch` methods are missing on some nodes (chopsticks among them) while the
//! legacy ones are served everywhere.
//!
//! Every call runs under the client's timeout, so a node that stops answering is an error
//! the caller sees (and the daemon answers by reconnecting), never a hung task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use subxt::backend::LegacyBackend;
use subxt::client::OnlineClientAtBlock;
use subxt::dynamic::{self, Value};
use subxt::error::{DispatchError, TransactionEventsError};
use subxt::ext::scale_value::{Composite, Primitive, ValueDef};
use subxt::rpcs::{rpc_params, RpcClient};
use subxt::tx::TransactionStatus;
use subxt::utils::AccountId32;
use subxt::{OnlineClient, SubstrateConfig};

use super::keys::Hotkey;

type Api = OnlineClient<SubstrateConfig>;

/// A dynamic call: pallet, call and its fields in order.
pub type Call = subxt::tx::DynamicPayload<Vec<Value>>;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("{0:?} is not a node URL: use ws://HOST:PORT or wss://HOST:PORT")]
    Url(String),
    #[error("cannot connect to {url}: {message}; check the URL and that the node is up")]
    Connect { url: String, message: String },
    #[error("{what} on {url} did not answer within {secs} s")]
    Timeout {
        what: String,
        url: String,
        secs: u64,
    },
    #[error("{what} on {url} failed: {message}")]
    Rpc {
        what: String,
        url: String,
        message: String,
    },
    #[error("the runtime on {url} (spec_version {spec_version}) {missing}")]
    Runtime {
        url: String,
        spec_version: u32,
        missing: String,
    },
    #[error("the node refused the transaction before inclusion: {0}")]
    Invalid(String),
    #[error("{call} was included in block {block} but failed: {error}{hint}")]
    Failed {
        call: String,
        block: String,
        /// `Pallet::Error` for a pallet's error, else the dispatch error's text.
        error: String,
        hint: String,
    },
}

impl ChainError {
    /// Worth retrying later with the same input: the node or the network, not the call.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChainError::Connect { .. } | ChainError::Timeout { .. } | ChainError::Rpc { .. }
        )
    }

    /// The pallet error's name when the runtime rejected the call (`SubtensorModule::…`).
    pub fn pallet_error(&self) -> Option<&str> {
        match self {
            ChainError::Failed { error, .. } if error.contains("::") => Some(error),
            _ => None,
        }
    }
}

/// The uids of a subnet and the hotkeys that hold them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metagraph {
    pub netuid: u16,
    pub block: u64,
    /// (uid, hotkey ss58), by uid.
    pub neurons: Vec<(u16, String)>,
}

impl Metagraph {
    pub fn uid_of(&self, hotkey: &str) -> Option<u16> {
        self.neurons
            .iter()
            .find(|(_, h)| h == hotkey)
            .map(|(uid, _)| *uid)
    }
}

/// One commitment as the chain holds it: who, since which block, and the raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCommitment {
    pub hotkey: String,
    pub block: u64,
    /// The committed bytes, or why they could not be read as one Raw field.
    pub data: Result<Vec<u8>, String>,
}

/// An event of an included extrinsic, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChainEvent {
    pub pallet: String,
    pub name: String,
    pub fields: String,
}

/// What an included extrinsic did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inclusion {
    pub block_hash: String,
    pub extrinsic_hash: String,
    pub events: Vec<ChainEvent>,
}

impl Inclusion {
    pub fn has_event(&self, pallet: &str, name: &str) -> bool {
        self.events
            .iter()
            .any(|e| e.pallet == pallet && e.name == name)
    }
}

pub struct Subtensor {
    api: Api,
    rpc: RpcClient,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for Subtensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subtensor({})", self.url)
    }
}

impl Subtensor {
    /// Connects (ws:// or wss://) and reads the runtime's metadata.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Subtensor, ChainError> {
        let parsed = url::Url::parse(url).map_err(|_| ChainError::Url(url.to_string()))?;
        if !matches!(parsed.scheme(), "ws" | "wss") || parsed.host_str().is_none() {
            return Err(ChainError::Url(url.to_string()));
        }
        let connect_error = |message: String| ChainError::Connect {
            url: url.to_string(),
            message,
        };
        let connect = async {
            let rpc = RpcClient::from_insecure_url(url)
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            let backend = LegacyBackend::<SubstrateConfig>::builder().build(rpc.clone());
            let api = Api::from_backend(Arc::new(backend))
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            Ok::<_, ChainError>((rpc, api))
        };
        let (rpc, api) =
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| ChainError::Timeout {
                    what: "connecting".into(),
                    url: url.to_string(),
                    secs: timeout.as_secs(),
                })??;
        Ok(Subtensor {
            api,
            rpc,
            url: url.to_string(),
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The raw RPC client, for node-specific methods (chopsticks' `dev_*` in tests).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ChainError::Rpc {
                what: what.to_string(),
                url: self.url.clone(),
                message: e.to_string(),
            }),
            Err(_) => Err(ChainError::Timeout {
                what: what.to_string(),
                url: self.url.clone(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// A raw JSON-RPC request under the timeout.
    pub async fn request(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ChainError> {
        self.timed(method, self.rpc.request(method, rpc_params![params]))
            .await
    }

    async fn at_current(&self) -> Result<OnlineClientAtBlock<SubstrateConfig>, ChainError> {
        self.timed("reading the current block", self.api.at_current_block())
            .await
    }

    /// The newest finalized block's number.
    pub async fn block(&self) -> Result<u64, ChainError> {
        Ok(self.at_current().await?.block_number())
    }

    /// Refuses a call the runtime at `at` does not have, naming what is missing.
    fn require(
        &self,
        at: &OnlineClientAtBlock<SubstrateConfig>,
        pallet: &str,
        call: &str,
    ) -> Result<(), ChainError> {
        let metadata = at.metadata();
        let present = metadata
            .pallet_by_name(pallet)
            .is_some_and(|p| p.call_variant_by_name(call).is_some());
        if present {
            return Ok(());
        }
        Err(ChainError::Runtime {
            url: self.url.clone(),
            spec_version: at.spec_version(),
            missing: format!("has no {pallet}.{call}"),
        })
    }

    /// The metagraph's uid ↔ hotkey map of `netuid` (`SubtensorModule.Keys`).
    pub async fn metagraph(&self, netuid: u16) -> Result<Metagraph, ChainError> {
        let at = self.at_current().await?;
        let block = at.block_number();
        let what = "reading SubtensorModule.Keys";
        let address = dynamic::storage::<(u16, u16), [u8; 32]>("SubtensorModule", "Keys");
        let entry = at
            .storage()
            .entry(address)
            .map_err(|e| ChainError::Runtime {
                url: self.url.clone(),
                spec_version: at.spec_version(),
                missing: format!("has no SubtensorModule.Keys storage ({e})"),
            })?;
        let neurons = self
            .timed(what, async {
                let mut neurons = Vec::new();
                let mut iter = entry.iter((netuid,)).await.map_err(|e| e.to_string())?;
                while let Some(kv) = iter.next().await {
                    let kv = kv.map_err(|e| e.to_string())?;
                    let uid = kv
                        .key()
                        .map_err(|e| e.to_string())?
                        .part(1)
                        .map(|p| p.decode_as::<u16>())
                        .transpose()
                        .map_err(|e| e.to_string())?
                        .flatten();
                    let hotkey = kv.value().decode().map_err(|e| e.to_string())?;
                    if let Some(uid) = uid {
                        neurons.push((uid, AccountId32(hotkey).to_string()));
                    }
                }
                Ok::<_, String>(neurons)
            })
            .await?;
        let mut neurons = neurons;
        neurons.sort();
        Ok(Metagraph {
            netuid,
            block,
            neurons,
        })
    }

    /// The weights `uid` has set on `netuid`, as the runtime stores them (`SubtensorModule.Weights`).
    pub async fn weights_of(&self, netuid: u16, uid: u16) -> Result<Vec<(u16, u16)>, ChainError> {
        let at = self.at_current().await?;
        let address = dynamic::storage::<(u16, u16), Vec<(u16, u16)>>("SubtensorModule", "Weights");
        self.timed("reading SubtensorModule.Weights", async {
            at.storage()
                .fetch(address, (netuid, uid))
                .await
                .map_err(|e| e.to_string())?
                .decode()
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Every commitment on `netuid` (`Commitments.CommitmentOf`). A runtime without the
    /// Commitments pallet is an error that says so.
    pub async fn commitments(&self, netuid: u16) -> Result<Vec<RawCommitment>, ChainError> {
        let at = self.at_current().await?;
        let address = dynamic::storage::<(u16, [u8; 32]), Value>("Commitments", "CommitmentOf");
        let entry = at
            .storage()
            .entry(address)
            .map_err(|_| ChainError::Runtime {
                url: self.url.clone(),
                spec_version: at.spec_version(),
                missing: "has no Commitments pallet, so miners cannot commit submissions to it; \
                      use a runtime that has one, or [commitments] file = … for a local source"
                    .into(),
            })?;
        self.timed("reading Commitments.CommitmentOf", async {
            let mut out = Vec::new();
            let mut iter = entry.iter((netuid,)).await.map_err(|e| e.to_string())?;
            while let Some(kv) = iter.next().await {
                let kv = kv.map_err(|e| e.to_string())?;
                let Some(hotkey) = kv
                    .key()
                    .map_err(|e| e.to_string())?
                    .part(1)
                    .map(|p| p.decode_as::<[u8; 32]>())
                    .transpose()
                    .map_err(|e| e.to_string())?
                    .flatten()
                else {
                    continue;
                };
                let value = kv.value().decode().map_err(|e| e.to_string())?;
                let (block, data) = registration(&value);
                out.push(RawCommitment {
                    hotkey: AccountId32(hotkey).to_string(),
                    block,
                    data,
                });
            }
            Ok::<_, String>(out)
        })
        .await
    }

    /// The SCALE call data of `call` (what a dry run prints).
    pub async fn call_data(&self, call: &Call) -> Result<Vec<u8>, ChainError> {
        let at = self.at_current().await?;
        at.tx().call_data(call).map_err(|e| ChainError::Runtime {
            url: self.url.clone(),
            spec_version: at.spec_version(),
            missing: format!(
                "does not take {}.{} as given: {e}",
                call.pallet_name(),
                call.call_name()
            ),
        })
    }

    /// Signs `call` with `signer`, submits it, and waits until it is in a block; then reads
    /// its events. A dispatch failure is [`ChainError::Failed`] naming the pallet error.
    pub async fn submit(&self, call: &Call, signer: &Hotkey) -> Result<Inclusion, ChainError> {
        let name = format!("{}.{}", call.pallet_name(), call.call_name());
        let at = self.at_current().await?;
        self.require(&at, call.pallet_name(), call.call_name())?;
        let submitting = format!("submitting {name}");
        let mut progress = match tokio::time::timeout(
            self.timeout,
            at.tx()
                .sign_and_submit_then_watch_default(call, signer.keypair()),
        )
        .await
        {
            Ok(Ok(p)) => p,
            // The node validates before it accepts: a bad nonce, a failed signed extension
            // (e.g. subtensor's rate limits on today's runtime) or a malformed call.
            Ok(Err(e)) => return Err(ChainError::Invalid(format!("{name}: {e}"))),
            Err(_) => {
                return Err(ChainError::Timeout {
                    what: submitting,
                    url: self.url.clone(),
                    secs: self.timeout.as_secs(),
                })
            }
        };
        let extrinsic_hash = format!("{:?}", progress.extrinsic_hash());
        let included = self
            .timed(&format!("waiting for {name} to be included"), async {
                while let Some(status) = progress.next().await {
                    match status.map_err(|e| e.to_string())? {
                        TransactionStatus::InBestBlock(b)
                        | TransactionStatus::InFinalizedBlock(b) => return Ok(Some(b)),
                        TransactionStatus::Error { message }
                        | TransactionStatus::Invalid { message }
                        | TransactionStatus::Dropped { message } => return Err(message),
                        _ => {}
                    }
                }
                Ok::<_, String>(None)
            })
            .await?;
        let Some(included) = included else {
            return Err(ChainError::Invalid(format!(
                "{name}: the node stopped reporting on the transaction before it was included"
            )));
        };
        let block_hash = format!("{:?}", included.block_hash());
        match tokio::time::timeout(self.timeout, included.wait_for_success()).await {
            Err(_) => Err(ChainError::Timeout {
                what: format!("reading {name}'s events"),
                url: self.url.clone(),
                secs: self.timeout.as_secs(),
            }),
            Ok(Ok(events)) => Ok(Inclusion {
                block_hash,
                extrinsic_hash,
                events: events
                    .iter()
                    .filter_map(|e| e.ok())
                    .map(|e| ChainEvent {
                        pallet: e.pallet_name().to_string(),
                        name: e.event_name().to_string(),
                        fields: e
                            .decode_as::<Value>()
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    })
                    .collect(),
            }),
            Ok(Err(TransactionEventsError::ExtrinsicFailed(error))) => {
                let error = match &error {
                    DispatchError::Module(m) => m.details_string(),
                    other => other.to_string(),
                };
                Err(ChainError::Failed {
                    hint: hint(&error),
                    call: name,
                    block: block_hash,
                    error,
                })
            }
            Ok(Err(e)) => Err(ChainError::Rpc {
                what: format!("reading {name}'s events"),
                url: self.url.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// What to do about the subtensor errors a validator meets.
fn hint(error: &str) -> String {
    let name = error.rsplit("::").next().unwrap_or(error);
    let h = match name {
        "NotRegistered" => "the hotkey is not registered on this subnet: register it first",
        "NoValidatorPermit" => {
            "the hotkey has no validator permit on this subnet: it needs more stake"
        }
        "SettingWeightsTooFast" => {
            "the subnet's weights rate limit has not passed since the last set_weights: \
             raise set_weights_interval_blocks"
        }
        "NotSettingEnoughWeights" | "NotEnoughWeights" => {
            "fewer uids than the subnet's min_allowed_weights"
        }
        "IncorrectNetworkVersionKey" | "IncorrectWeightVersionKey" => {
            "version_key is below the subnet's weights_version: set [weights] version_key"
        }
        "MaxWeightExceeded" => "a weight is above the subnet's max_weight_limit",
        "InvalidUid" | "UidVecContainInvalidOne" => "a uid is not registered on this subnet",
        "NetworkDoesNotExist" | "SubNetworkDoesNotExist" => "no such netuid on this chain",
        _ => return String::new(),
    };
    format!(" ({h})")
}

/// `SubtensorModule.set_weights(netuid, dests, weights, version_key)`.
pub fn set_weights_call(netuid: u16, uids: &[u16], weights: &[u16], version_key: u64) -> Call {
    let list = |xs: &[u16]| Value::unnamed_composite(xs.iter().map(|&x| Value::u128(x.into())));
    dynamic::tx(
        "SubtensorModule",
        "set_weights",
        vec![
            Value::u128(netuid.into()),
            list(uids),
            list(weights),
            Value::u128(version_key.into()),
        ],
    )
}

/// `Commitments.set_commitment(netuid, info)` with one Raw field, as `bittensor`'s
/// `subtensor.commit` sends it.
pub fn set_commitment_call(netuid: u16, data: &[u8]) -> Call {
    let field = Value::unnamed_variant(format!("Raw{}", data.len()), [Value::from_bytes(data)]);
    let info = Value::named_composite([("fields", Value::unnamed_composite([field]))]);
    dynamic::tx(
        "Commitments",
        "set_commitment",
        vec![Value::u128(netuid.into()), info],
    )
}

/// Reads a `Registration { deposit, block, info: { fields: [Data, …] } }`: the block and the
/// bytes of its first field, which must be `RawN`.
pub fn registration<T>(value: &Value<T>) -> (u64, Result<Vec<u8>, String>) {
    let block = field(value, "block")
        .and_then(|b| b.as_u128())
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0);
    let data = (|| {
        let info = field(value, "info").ok_or("the registration has no info")?;
        let fields = field(info, "fields").ok_or("the commitment info has no fields")?;
        let first = match &fields.value {
            ValueDef::Composite(c) => c.values().next(),
            _ => None,
        }
        .ok_or("the commitment has no fields")?;
        let ValueDef::Variant(variant) = &first.value else {
            return Err("the commitment's field is not a Data variant".to_string());
        };
        if !variant.name.starts_with("Raw") {
            return Err(format!(
                "the commitment's field is {}, not Raw bytes",
                variant.name
            ));
        }
        let inner = variant
            .values
            .values()
            .next()
            .ok_or("the Raw field holds nothing")?;
        bytes_of(inner).ok_or_else(|| "the Raw field does not hold bytes".to_string())
    })();
    (block, data)
}

fn field<'a, T>(value: &'a Value<T>, name: &str) -> Option<&'a Value<T>> {
    match &value.value {
        ValueDef::Composite(Composite::Named(fields)) => {
            fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
        }
        // A newtype wrapper (`BoundedVec`, `Box`) decodes as a one-field unnamed composite.
        ValueDef::Composite(Composite::Unnamed(values)) if values.len() == 1 => {
            field(&values[0], name)
        }
        _ => None,
    }
}

fn bytes_of<T>(value: &Value<T>) -> Option<Vec<u8>> {
    match &value.value {
        ValueDef::Composite(c) => {
            let values: Vec<_> = c.values().collect();
            // `[u8; N]` wrapped once more (a newtype) decodes as a composite of one composite.
            if values.len() == 1 && matches!(values[0].value, ValueDef::Composite(_)) {
                return bytes_of(values[0]);
            }
            values
                .iter()
                .map(|v| match &v.value {
                    ValueDef::Primitive(Primitive::U128(b)) => u8::try_from(*b).ok(),
                    _ => None,
                })
                .collect()
        }
        ValueDef::Primitive(Primitive::U128(_)) => None,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration_value(field: Value) -> Value {
        Value::named_composite([
            ("deposit", Value::u128(0)),
            ("block", Value::u128(4242)),
            (
                "info",
                Value::named_composite([("fields", Value::unnamed_composite([field]))]),
            ),
        ])
    }

    #[test]
    fn raw_fields_are_read_and_others_refused() {
        let text = b"0123456789abcdef0123456789abcdef:https://example.com/a.wasm";
        let raw = Value::unnamed_variant(format!("Raw{}", text.len()), [Value::from_bytes(text)]);
        assert_eq!(
            registration(&registration_value(raw)),
            (4242, Ok(text.to_vec()))
        );
        let hash = Value::unnamed_variant("Sha256", [Value::from_bytes([0u8; 32])]);
        let (_, data) = registration(&registration_value(hash));
        assert!(data.unwrap_err().contains("Sha256"));
        let none = Value::unnamed_variant("None", []);
        assert!(registration(&registration_value(none)).1.is_err());
        let (block, data) = registration(&Value::u128(7));
        assert_eq!(block, 0);
        assert!(data.is_err());
    }

    #[test]
    fn the_commitment_call_is_one_raw_field() {
        let call = set_commitment_call(3, b"abc");
        assert_eq!(call.pallet_name(), "Commitments");
        assert_eq!(call.call_name(), "set_commitment");
    }

    #[test]
    fn hints_name_what_to_do() {
        assert!(hint("SubtensorModule::NoValidatorPermit").contains("validator permit"));
        assert!(hint("SubtensorModule::SettingWeightsTooFast").contains("interval"));
        assert_eq!(hint("Balances::Whatever"), "");
    }
}

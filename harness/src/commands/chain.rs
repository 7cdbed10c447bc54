//! `crusades chain …`: one-shot chain actions: publish a commitment, set the weights the
//! store gives once, and read the metagraph and the commitments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::results::{pick_competition, store_error, BurnArgs, StoreArgs, ThresholdArgs};
use crate::bail_input;
use crate::chain::client::{self, Inclusion, Subtensor};
use crate::chain::commitment::{self, Commitment};
use crate::chain::keys::{Hotkey, KeySource};
use crate::validator::config::DEFAULT_URL;
use crate::validator::setter::{self, WeightsParams};

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Publish a submission: commit `<sha256[:32]>:<url>` for your hotkey (needs a runtime
    /// with the Commitments pallet).
    Commit(CommitArgs),
    /// Set the weights the store's leaderboard gives, once (what the daemon does every
    /// interval).
    Weights(ChainWeightsArgs),
    /// The subnet's uids and hotkeys.
    Metagraph(ReadArgs),
    /// The subnet's commitments, parsed (or why not).
    Commitments(ReadArgs),
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The subtensor node [default: $CRUSADES_SUBTENSOR, else the finney entrypoint].
    #[arg(long, value_name = "ws(s)://HOST:PORT")]
    pub url: Option<String>,
    /// The subnet.
    #[arg(long, default_value_t = 3)]
    pub netuid: u16,
    /// Each RPC call's limit, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

impl NodeArgs {
    fn url(&self) -> String {
        self.url
            .clone()
            .or_else(|| {
                std::env::var("CRUSADES_SUBTENSOR")
                    .ok()
                    .filter(|u| !u.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The wallet's name (~/.bittensor/wallets/NAME).
    #[arg(long, default_value = "default")]
    pub wallet_name: String,
    /// The hotkey's name (NAME/hotkeys/HOTKEY).
    #[arg(long, default_value = "default")]
    pub wallet_hotkey: String,
    /// The wallets directory [default: $BT_WALLET_PATH or ~/.bittensor/wallets].
    #[arg(long)]
    pub wallet_path: Option<PathBuf>,
    /// A dev key URI such as //Alice instead of a wallet (local chains).
    #[arg(long, value_name = "URI")]
    pub dev_key: Option<String>,
}

impl KeyArgs {
    fn load(&self) -> anyhow::Result<Hotkey> {
        let source = match &self.dev_key {
            Some(uri) => KeySource::Uri(uri.clone().into()),
            None => KeySource::Wallet {
                wallets: self
                    .wallet_path
                    .clone()
                    .unwrap_or_else(KeySource::default_wallets_dir),
                name: self.wallet_name.clone(),
                hotkey: self.wallet_hotkey.clone(),
            },
        };
        Hotkey::load(&source).map_err(|e| anyhow::Error::new(crate::InputError(e.to_string())))
    }
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// The component's sha256 (64 or at least 32 hex digits), or the .wasm file itself.
    pub hash: String,
    /// Where validators download it (http or https).
    #[arg(value_name = "URL")]
    pub location: String,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Print the call and its encoded data without signing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ChainWeightsArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The competition (`contract/preset/device`) [default: the latest evaluated].
    #[arg(long)]
    pub competition: Option<String>,
    /// Passed to set_weights; must be at least the subnet's weights_version.
    #[arg(long, default_value_t = 0)]
    pub version_key: u64,
    #[command(flatten)]
    pub threshold: ThresholdArgs,
    #[command(flatten)]
    pub burn: BurnArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the call, its encoded data and the weights without signing (recorded in the
    /// weights history as a dry run).
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: ChainCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            ChainCommand::Commit(a) => commit(a).await,
            ChainCommand::Weights(a) => weights(a).await,
            ChainCommand::Metagraph(a) => metagraph(a).await,
            ChainCommand::Commitments(a) => commitments(a).await,
        }
    })
}

async fn connect(node: &NodeArgs) -> anyhow::Result<Subtensor> {
    if node.timeout == 0 {
        bail_input!("--timeout must be at least 1");
    }
    let url = node.url();
    Subtensor::connect(&url, Duration::from_secs(node.timeout))
        .await
        .map_err(|e| match e {
            client::ChainError::Url(_) => anyhow::Error::new(crate::InputError(e.to_string())),
            e => e.into(),
        })
}

/// The commitment text for HASH (hex, or a file to hash) and URL, checked by the parser the
/// validators use.
pub fn commitment_text(hash: &str, url: &str) -> anyhow::Result<Commitment> {
    let path = std::path::Path::new(hash);
    let hex_digits = if path.is_file() {
        let bytes = std::fs::read(path)
            .map_err(|e| crate::InputError(format!("cannot read {hash}: {e}")))?;
        crusades_sandbox::runner::sha256_hex(&bytes)
    } else {
        hash.trim().to_ascii_lowercase()
    };
    if hex_digits.len() < 32 || !hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail_input!(
            "{hash:?} is neither a sha256 (at least 32 hex digits; `crusades build` prints it) \
             nor a file"
        );
    }
    let text = format!("{}:{url}", &hex_digits[..32]);
    commitment::parse(&text).map_err(|e| anyhow::Error::new(crate::InputError(format!("{e}"))))
}

#[derive(Serialize)]
struct CommitOut<'a> {
    commitment: String,
    bytes: usize,
    netuid: u16,
    hotkey: Option<String>,
    call_data: Option<String>,
    dry_run: bool,
    inclusion: Option<&'a Inclusion>,
}

async fn commit(a: CommitArgs) -> anyhow::Result<()> {
    let c = commitment_text(&a.hash, &a.location)?;
    let text = c.to_string();
    let key = if a.dry_run { None } else { Some(a.key.load()?) };
    let chain = connect(&a.node).await?;
    let call = client::set_commitment_call(a.node.netuid, text.as_bytes());
    let call_data = chain.call_data(&call).await?;
    let inclusion = match &key {
        Some(k) => Some(chain.submit(&call, k).await?),
        None => None,
    };
    let out = CommitOut {
        bytes: text.len(),
        commitment: text,
        netuid: a.node.netuid,
        hotkey: key.as_ref().map(|k| k.ss58()),
        call_data: Some(format!("0x{}", hex::encode(&call_data))),
        dry_run: a.dry_run,
        inclusion: inclusion.as_ref(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("commitment  {} ({} bytes)", out.commitment, out.bytes);
    println!(
        "call        Commitments.set_commitment(netuid: {}, fields: [Raw{}])",
        out.netuid, out.bytes
    );
    println!("call data   {}", out.call_data.as_deref().unwrap_or("-"));
    print_inclusion(out.inclusion, out.hotkey.as_deref());
    Ok(())
}

fn print_inclusion(inclusion: Option<&Inclusion>, signer: Option<&str>) {
    match inclusion {
        None => println!("dry run: nothing signed or sent"),
        Some(i) => {
            println!(
                "included    block {}  extrinsic {}  signed by {}",
                i.block_hash,
                i.extrinsic_hash,
                signer.unwrap_or("?")
            );
            for e in &i.events {
                println!("  event     {}.{} {}", e.pallet, e.name, e.fields);
            }
        }
    }
}

async fn weights(a: ChainWeightsArgs) -> anyhow::Result<()> {
    let threshold = a.threshold.rule()?;
    let burn = a.burn.rule()?;
    let mut store = a.store.open_existing()?;
    let competition = pick_competition(&store, a.competition.as_deref())?;
    let key = if a.dry_run { None } else { Some(a.key.load()?) };
    let chain = connect(&a.node).await?;
    let params = WeightsParams {
        netuid: a.node.netuid,
        competition: &competition,
        threshold,
        burn,
        version_key: a.version_key,
    };
    let outcome = setter::set_weights_once(&chain, &mut store, &params, key.as_ref())
        .await
        .map_err(|e| match e {
            setter::WeightsError::Store(s) => store_error(s),
            e => e.into(),
        })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    println!(
        "{}  ·  block {}  ·  netuid {}",
        outcome.competition, outcome.block, outcome.netuid
    );
    for (uid, (w, w16)) in outcome
        .uids
        .iter()
        .zip(outcome.weights.weights.iter().zip(&outcome.weights_u16))
    {
        println!("  uid {uid:>5}  {:>7.3} %  u16 {w16}", w * 100.0);
    }
    if let Some(note) = &outcome.weights.note {
        println!("  ({note})");
    }
    println!("call        {}", outcome.call);
    println!("call data   {}", outcome.call_data);
    print_inclusion(
        outcome.inclusion.as_ref(),
        key.as_ref().map(|k| k.ss58()).as_deref(),
    );
    println!(
        "recorded in the weights history (id {})",
        outcome.recorded_id
    );
    Ok(())
}

async fn metagraph(a: ReadArgs) -> anyhow::Result<()> {
    let chain = connect(&a.node).await?;
    let m = chain.metagraph(a.node.netuid).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!(
        "netuid {}  ·  block {}  ·  {} uids",
        m.netuid,
        m.block,
        m.neurons.len()
    );
    for (uid, hotkey) in &m.neurons {
        println!("  {uid:>5}  {hotkey}");
    }
    Ok(())
}

#[derive(Serialize)]
struct CommitmentOut {
    hotkey: String,
    block: u64,
    commitment: Option<String>,
    invalid: Option<String>,
}

async fn commitments(a: ReadArgs) -> anyhow::Result<()> {
    let chain = connect(&a.node).await?;
    let raw = chain.commitments(a.node.netuid).await?;
    let rows: Vec<CommitmentOut> = raw
        .into_iter()
        .map(|c| {
            let parsed = c
                .data
                .and_then(|d| commitment::parse_bytes(&d).map_err(|e| e.to_string()));
            CommitmentOut {
                hotkey: c.hotkey,
                block: c.block,
                commitment: parsed.as_ref().ok().map(|p| p.to_string()),
                invalid: parsed.err(),
            }
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        match (&r.commitment, &r.invalid) {
            (Some(c), _) => println!("{}  block {:>9}  {c}", r.hotkey, r.block),
            (_, Some(why)) => println!("{}  block {:>9}  INVALID: {why}", r.hotkey, r.block),
            _ => {}
        }
    }
    if rows.is_empty() {
        println!("no commitments on netuid {}", a.node.netuid);
    }
    Ok(())
}

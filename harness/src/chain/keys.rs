//! The validator's signing key: the hotkey of a standard Bittensor wallet, or a dev URI.
//!
//! A Bittensor wallet keeps each hotkey as an unencrypted JSON keyfile at
//! `~/.bittensor/wallets/NAME/hotkeys/HOTKEY` with `secretSeed` (the 32-byte sr25519 mini
//! secret, hex) and `secretPhrase` (its BIP-39 mnemonic). A dev URI such as `//Alice` derives
//! from Substrate's well-known dev phrase, for tests on a local chain.
//!
//! The secret never leaves this module in printable form: [`Hotkey`]'s `Debug` and `Display`
//! show the public address and where the key came from, and errors quote no key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use subxt::utils::AccountId32;
use subxt_signer::sr25519::Keypair;
use subxt_signer::{bip39, ExposeSecret, SecretString, SecretUri};

/// Where a hotkey comes from, as the config or a flag names it.
#[derive(Clone)]
pub enum KeySource {
    /// `~/.bittensor/wallets/NAME/hotkeys/HOTKEY` (or under another wallets directory).
    Wallet {
        wallets: PathBuf,
        name: String,
        hotkey: String,
    },
    /// A secret URI such as `//Alice` (the dev phrase), or `PHRASE//derivation`.
    Uri(SecretString),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl KeySource {
    /// Where it comes from, safe to print: a URI is shown only when it is a public dev
    /// derivation (`//Name` from the dev phrase), never a phrase.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Wallet {
                wallets,
                name,
                hotkey,
            } => format!(
                "wallet {name}, hotkey {hotkey} ({})",
                wallets.join(name).join("hotkeys").join(hotkey).display()
            ),
            KeySource::Uri(uri) => {
                let uri = uri.expose_secret();
                if is_dev_uri(uri) {
                    format!("dev key {uri}")
                } else {
                    "a secret URI".to_string()
                }
            }
        }
    }

    /// The default wallets directory: `$BT_WALLET_PATH` or `~/.bittensor/wallets`.
    pub fn default_wallets_dir() -> PathBuf {
        if let Some(p) = std::env::var_os("BT_WALLET_PATH") {
            return PathBuf::from(p);
        }
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".bittensor")
            .join("wallets")
    }
}

/// A `//Name` derivation of the dev phrase: public knowledge, fine to print.
fn is_dev_uri(uri: &str) -> bool {
    uri.starts_with("//")
        && uri.len() > 2
        && uri[2..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/')
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no hotkey file at {}: create it with `btcli wallet new_hotkey --wallet.name {name} \
         --wallet.hotkey {hotkey}`, or name another wallet/hotkey",
        path.display()
    )]
    Missing {
        path: PathBuf,
        name: String,
        hotkey: String,
    },
    #[error("cannot read the hotkey file {}: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error(
        "the hotkey file {} is encrypted: crusades reads unencrypted hotkeys only (the usual \
         form for a hotkey); regenerate it without a password",
        path.display()
    )]
    Encrypted { path: PathBuf },
    #[error("the hotkey file {} is not a Bittensor keyfile: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("the secret URI is not valid: {0}")]
    Uri(String),
    #[error(
        "the hotkey file {} holds a key for {found} but says its address is {claimed}: the \
         file is damaged or was edited by hand",
        path.display()
    )]
    AddressMismatch {
        path: PathBuf,
        found: String,
        claimed: String,
    },
}

/// A loaded signing key.
pub struct Hotkey {
    keypair: Keypair,
    account: AccountId32,
    source: String,
}

impl fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hotkey({} from {})", self.account, self.source)
    }
}

impl fmt::Display for Hotkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.account)
    }
}

impl Hotkey {
    pub fn load(source: &KeySource) -> Result<Hotkey, KeyError> {
        let keypair = match source {
            KeySource::Uri(uri) => {
                let uri = SecretUri::from_str(uri.expose_secret())
                    .map_err(|e| KeyError::Uri(e.to_string()))?;
                Keypair::from_uri(&uri).map_err(|e| KeyError::Uri(e.to_string()))?
            }
            KeySource::Wallet {
                wallets,
                name,
                hotkey,
            } => {
                let path = wallets.join(name).join("hotkeys").join(hotkey);
                if !path.is_file() {
                    return Err(KeyError::Missing {
                        path,
                        name: name.clone(),
                        hotkey: hotkey.clone(),
                    });
                }
                from_keyfile(&path)?
            }
        };
        let account = AccountId32(keypair.public_key().0);
        Ok(Hotkey {
            keypair,
            account,
            source: source.describe(),
        })
    }

    /// The ss58 address (prefix 42, as Bittensor shows it).
    pub fn ss58(&self) -> String {
        self.account.to_string()
    }

    pub fn account(&self) -> &AccountId32 {
        &self.account
    }

    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Where it was loaded from (no secret in it).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Reads a Bittensor keyfile: JSON with `secretSeed` (preferred) or `secretPhrase`.
pub fn from_keyfile(path: &Path) -> Result<Keypair, KeyError> {
    let bytes = std::fs::read(path).map_err(|e| KeyError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Bittensor's encrypted keyfiles start with one of these markers; the rest is ciphertext.
    if [&b"$NACL"[..], b"$BTWALLET", b"$ANSIBLE_VAULT", b"gAAAAA"]
        .iter()
        .any(|m| bytes.starts_with(m))
    {
        return Err(KeyError::Encrypted {
            path: path.to_path_buf(),
        });
    }
    let malformed = |reason: String| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(format!("not JSON ({})", e.classify_label())))?;
    let field = |name: &str| json.get(name).and_then(|v| v.as_str());
    let keypair = if let Some(seed) = field("secretSeed") {
        let hex_digits = seed.strip_prefix("0x").unwrap_or(seed);
        let bytes: [u8; 32] = hex::decode(hex_digits)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("secretSeed is not 32 bytes of hex".into()))?;
        Keypair::from_secret_key(bytes)
            .map_err(|_| malformed("secretSeed is not a valid sr25519 seed".into()))?
    } else if let Some(phrase) = field("secretPhrase") {
        let mnemonic = bip39::Mnemonic::parse(phrase)
            .map_err(|_| malformed("secretPhrase is not a valid BIP-39 mnemonic".into()))?;
        Keypair::from_phrase(&mnemonic, None)
            .map_err(|_| malformed("secretPhrase does not give an sr25519 key".into()))?
    } else {
        return Err(malformed(
            "it has neither secretSeed nor secretPhrase (a coldkeypub.txt holds no secret)".into(),
        ));
    };
    if let Some(claimed) = field("ss58Address") {
        let found = AccountId32(keypair.public_key().0).to_string();
        if claimed != found {
            return Err(KeyError::AddressMismatch {
                path: path.to_path_buf(),
                found,
                claimed: claimed.to_string(),
            });
        }
    }
    Ok(keypair)
}

trait ClassifyLabel {
    fn classify_label(&self) -> &'static str;
}

impl ClassifyLabel for serde_json::Error {
    /// A JSON error without its position's text: the message of a parse error can quote the
    /// input, and the input is a secret.
    fn classify_label(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Parses an ss58 address.
pub fn parse_account(ss58: &str) -> Result<AccountId32, String> {
    AccountId32::from_str(ss58).map_err(|e| format!("{ss58:?} is not an ss58 address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    // Alice's mini secret (`subkey inspect //Alice`): a wallet whose secretSeed is this is
    // Alice, which pins the seed expansion Bittensor's keyfiles use.
    const ALICE_SEED: &str = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
    // The dev phrase with no derivation (`subkey inspect "bottom drive …"`).
    const DEV_ROOT: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

    fn wallet(dir: &Path, body: &str) -> KeySource {
        let hotkeys = dir.join("w").join("hotkeys");
        std::fs::create_dir_all(&hotkeys).unwrap();
        std::fs::write(hotkeys.join("h"), body).unwrap();
        KeySource::Wallet {
            wallets: dir.to_path_buf(),
            name: "w".into(),
            hotkey: "h".into(),
        }
    }

    #[test]
    fn dev_uri_is_alice() {
        let key = Hotkey::load(&KeySource::Uri("//Alice".into())).unwrap();
        assert_eq!(key.ss58(), ALICE);
        assert_eq!(
            format!("{key:?}"),
            format!("Hotkey({ALICE} from dev key //Alice)")
        );
    }

    #[test]
    fn wallet_seed_and_phrase() {
        let dir = tempfile::tempdir().unwrap();
        let seed = wallet(
            dir.path(),
            &format!(r#"{{"secretSeed": "{ALICE_SEED}", "ss58Address": "{ALICE}"}}"#),
        );
        assert_eq!(Hotkey::load(&seed).unwrap().ss58(), ALICE);
        let phrase = wallet(
            dir.path(),
            &format!(r#"{{"secretPhrase": "{}"}}"#, subxt_signer::DEV_PHRASE),
        );
        assert_eq!(Hotkey::load(&phrase).unwrap().ss58(), DEV_ROOT);
    }

    #[test]
    fn bad_keyfiles_are_named_and_quote_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            ("$NACL\x00\x01ciphertext", "encrypted"),
            ("{\"secretSeed\": \"0x1234 secret-bytes\"}", "not 32 bytes"),
            (
                "{\"secretPhrase\": \"not a real mnemonic secret-words\"}",
                "BIP-39",
            ),
            ("{\"publicKey\": \"0x00\"}", "neither secretSeed"),
            ("secret-words and not json", "not JSON"),
        ];
        for (body, expect) in cases {
            let err = Hotkey::load(&wallet(dir.path(), body))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{body:?}: {err}");
            assert!(!err.contains("secret-"), "{err} quotes the file");
        }
        let lying = wallet(
            dir.path(),
            &format!(r#"{{"secretSeed": "{ALICE_SEED}", "ss58Address": "{DEV_ROOT}"}}"#),
        );
        assert!(matches!(
            Hotkey::load(&lying),
            Err(KeyError::AddressMismatch { .. })
        ));
        let missing = KeySource::Wallet {
            wallets: dir.path().into(),
            name: "nope".into(),
            hotkey: "default".into(),
        };
        let err = Hotkey::load(&missing).unwrap_err().to_string();
        assert!(err.contains("btcli wallet new_hotkey"), "{err}");
    }

    #[test]
    fn a_phrase_uri_is_never_printed() {
        let uri = format!("{}//stash", subxt_signer::DEV_PHRASE);
        let source = KeySource::Uri(uri.clone().into());
        assert_eq!(source.describe(), "a secret URI");
        assert!(!format!("{source:?}").contains("bottom"));
        let key = Hotkey::load(&source).unwrap();
        assert!(!format!("{key:?}").contains("bottom"));
    }
}

//! The limits a run is held to. Every one is explicit, has a documented default, and ends the
//! run with its own failure code when breached.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Caps on one run. `crusades run --limit KEY=VALUE` overrides any field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// WebAssembly fuel (≈ wasm instructions) the guest's own code may burn. Host ops cost
    /// none: they are capped by `max_ops` and the wall clock.
    pub fuel: u64,
    /// Wall-clock seconds for the whole guest call. Checked by an epoch deadline in wasm code,
    /// at every host call, and (with a grace period) by the parent, which kills the worker.
    pub timeout_s: f64,
    /// Bytes of guest linear memory.
    pub guest_memory_bytes: u64,
    /// Bytes of live host tensors held by the guest's handles, counted per handle as
    /// numel × element size (so a view counts in full). Includes the parameters.
    pub tensor_bytes: u64,
    /// Op calls over the whole run.
    pub max_ops: u64,
    /// Live tensor handles at any moment.
    pub max_handles: u64,
}

pub const GIB: u64 = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 20_000_000_000,
            timeout_s: 3600.0,
            guest_memory_bytes: 512 << 20,
            tensor_bytes: default_tensor_bytes(),
            max_ops: 50_000_000,
            // Honest peaks (θ, momentum, uploads, the peers'): 547 handles on tiny and 2,254 on
            // small (8 layers, 4 peers) for submissions/fast; 1b's 16 layers hold about twice
            // small's. 2¹⁶ leaves over 10× that, and a leak ends in seconds.
            max_handles: 1 << 16,
        }
    }
}

/// Three quarters of physical memory (64 GiB if it cannot be read): past that a CPU run would
/// swap or be killed, and a clear limit error is better than either.
fn default_tensor_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024 / 4 * 3)
        .unwrap_or(64 * GIB)
}

impl Limits {
    pub const KEYS: &'static [&'static str] = &[
        "fuel",
        "timeout_s",
        "guest_memory_bytes",
        "tensor_bytes",
        "max_ops",
        "max_handles",
    ];

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// Sets one limit from `key=value`. Sizes take K/M/G suffixes (binary).
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("'{assignment}': expected KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        let bad = || format!("{key}={value}: expected a positive number");
        match key {
            "timeout_s" => {
                let v: f64 = value.parse().map_err(|_| bad())?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(bad());
                }
                self.timeout_s = v;
            }
            "fuel" | "guest_memory_bytes" | "tensor_bytes" | "max_ops" | "max_handles" => {
                let v = parse_size(value).filter(|v| *v > 0).ok_or_else(bad)?;
                match key {
                    "fuel" => self.fuel = v,
                    "guest_memory_bytes" => self.guest_memory_bytes = v,
                    "tensor_bytes" => self.tensor_bytes = v,
                    "max_ops" => self.max_ops = v,
                    _ => self.max_handles = v,
                }
            }
            other => {
                return Err(format!(
                    "unknown limit '{other}'; the limits are {}",
                    Self::KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

/// `123`, `64K`, `512M`, `2G` (powers of 1024), or `1e9`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 10),
        'M' | 'm' => (&s[..s.len() - 1], 20),
        'G' | 'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if let Ok(v) = digits.parse::<u64>() {
        return v.checked_mul(1 << shift);
    }
    let v: f64 = digits.parse().ok()?;
    (v.is_finite() && (0.0..1.8e19).contains(&v)).then(|| (v * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_sizes_and_refuse_nonsense() {
        let mut l = Limits::default();
        l.set("tensor_bytes=2G").unwrap();
        l.set("guest_memory_bytes = 64M").unwrap();
        l.set("fuel=1e9").unwrap();
        l.set("timeout_s=2.5").unwrap();
        assert_eq!(l.tensor_bytes, 2 << 30);
        assert_eq!(l.guest_memory_bytes, 64 << 20);
        assert_eq!(l.fuel, 1_000_000_000);
        assert_eq!(l.timeout(), Duration::from_millis(2500));
        assert!(l.set("max_ops=0").is_err());
        assert!(l.set("timeout_s=-1").is_err());
        assert!(l.set("fuel=lots").is_err());
        let e = l.set("memory=1").unwrap_err();
        assert!(e.contains("tensor_bytes"), "{e}");
        assert!(Limits::default().tensor_bytes > 0);
    }
}

pub mod bench;
pub mod build;
pub mod compare;
pub mod compress;
pub mod flops;
pub mod ops;
pub mod reference;
pub mod run;
pub mod workload;

use crusades_reference::device::parse_device;
use tch::Device;

/// Parses --device, and sets libtorch's intra-op thread count when asked to.
pub fn setup_device(spec: &str, threads: Option<usize>) -> anyhow::Result<Device> {
    if let Some(n) = threads {
        if n == 0 {
            crate::bail_input!("--threads must be at least 1");
        }
        tch::set_num_threads(n as i32);
    }
    Ok(parse_device(spec)?)
}

pub mod bench;
pub mod build;
pub mod chain;
pub mod compare;
pub mod compress;
pub mod corpus;
pub mod flops;
pub mod hardware;
pub mod ops;
pub mod reference;
pub mod reproduce;
pub mod results;
pub mod run;
pub mod serve;
pub mod validate;
pub mod workload;

use crusades_reference::device::parse_device;
use tch::Device;

/// Parses --device, and sets libtorch's intra-op thread count when asked to. For CUDA the
/// driver is probed before libtorch is asked, so that a machine without one is told exactly
/// that (exit 2) rather than what libtorch makes of it.
pub fn setup_device(spec: &str, threads: Option<usize>) -> anyhow::Result<Device> {
    if let Some(n) = threads {
        if n == 0 {
            crate::bail_input!("--threads must be at least 1");
        }
        tch::set_num_threads(n as i32);
    }
    if spec.trim().starts_with("cuda") {
        check_cuda_driver(spec.trim())?;
    }
    Ok(parse_device(spec)?)
}

fn check_cuda_driver(spec: &str) -> anyhow::Result<()> {
    use crusades_gpu::cuda;
    if !cuda::driver_present() {
        crate::bail_input!(
            "--device {spec}: no CUDA here: the NVIDIA driver's libcuda.so.1 cannot be loaded \
             (is this a GPU machine? `nvidia-smi` should list the GPU). Use --device cpu"
        );
    }
    match cuda::device_count() {
        Ok(0) => crate::bail_input!(
            "--device {spec}: the NVIDIA driver is installed but sees no GPU (check \
             CUDA_VISIBLE_DEVICES and `nvidia-smi`). Use --device cpu"
        ),
        Ok(_) => Ok(()),
        Err(e) => crate::bail_input!("--device {spec}: {e}. Use --device cpu"),
    }
}

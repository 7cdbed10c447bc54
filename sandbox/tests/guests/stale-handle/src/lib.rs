//! Drops a tensor, then uses its handle again.
use crusades_sdk::bindings::crusades::submission::tensors::{from_f32, Tensor};
struct Stale;
impl crusades_sdk::Submission for Stale {
    fn run() -> crusades_sdk::Result<()> {
        let t = from_f32(&[1.0, 2.0], &[2])?;
        let handle = t.take_handle();
        // SAFETY (for the guest): none; it hands the host a handle it already gave back.
        let first = unsafe { Tensor::from_handle(handle) };
        drop(first);
        let again = unsafe { Tensor::from_handle(handle) };
        core::hint::black_box(again.shape());
        Ok(())
    }
}
crusades_sdk::export!(Stale);

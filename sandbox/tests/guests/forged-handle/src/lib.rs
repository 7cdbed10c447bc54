//! Uses a handle number it was never given, as if carried over from another run.
use crusades_sdk::bindings::crusades::submission::tensors::Tensor;
struct Forged;
impl crusades_sdk::Submission for Forged {
    fn run() -> crusades_sdk::Result<()> {
        let t = unsafe { Tensor::from_handle(4242) };
        core::hint::black_box(t.shape());
        Ok(())
    }
}
crusades_sdk::export!(Forged);

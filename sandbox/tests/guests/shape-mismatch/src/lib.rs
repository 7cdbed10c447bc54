//! Multiplies matrices whose shapes do not agree and passes the host's error up.
use crusades_sdk::{Dtype, Tensor};
struct Mismatch;
impl crusades_sdk::Submission for Mismatch {
    fn run() -> crusades_sdk::Result<()> {
        let a = Tensor::zeros(&[2, 3], Dtype::F32)?;
        let b = Tensor::zeros(&[2, 3], Dtype::F32)?;
        a.matmul(&b)?;
        Ok(())
    }
}
crusades_sdk::export!(Mismatch);

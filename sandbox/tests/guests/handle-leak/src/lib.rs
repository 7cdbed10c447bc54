//! Leaks a tensor handle per iteration: the handle cap must stop it.
use crusades_sdk::{Dtype, Tensor};
struct Leak;
impl crusades_sdk::Submission for Leak {
    fn run() -> crusades_sdk::Result<()> {
        loop {
            std::mem::forget(Tensor::zeros(&[1], Dtype::F32)?);
        }
    }
}
crusades_sdk::export!(Leak);

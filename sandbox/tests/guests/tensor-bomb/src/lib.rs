//! Keeps allocating 64 MiB host tensors and never lets one go.
use crusades_sdk::{Dtype, Tensor};
struct Bomb;
impl crusades_sdk::Submission for Bomb {
    fn run() -> crusades_sdk::Result<()> {
        let mut hoard = Vec::new();
        loop {
            hoard.push(Tensor::zeros(&[1 << 24], Dtype::F32)?);
        }
    }
}
crusades_sdk::export!(Bomb);

//! Multiplies a [2^20, 1] column by a [1, 2^20] row: 8 MiB of inputs, a 4 TiB product. The
//! host must refuse it from the shapes, before libtorch is asked for the memory.
use crusades_sdk::{Dtype, Tensor};
struct ShapeBomb;
impl crusades_sdk::Submission for ShapeBomb {
    fn run() -> crusades_sdk::Result<()> {
        let column = Tensor::ones(&[1 << 20, 1], Dtype::F32)?;
        let row = Tensor::ones(&[1, 1 << 20], Dtype::F32)?;
        column.matmul(&row)?;
        Ok(())
    }
}
crusades_sdk::export!(ShapeBomb);

//! Looks up an embedding with float indices and passes the host's error up.
use crusades_sdk::{Dtype, Tensor};
struct WrongDtype;
impl crusades_sdk::Submission for WrongDtype {
    fn run() -> crusades_sdk::Result<()> {
        let weight = Tensor::zeros(&[4, 2], Dtype::F32)?;
        let idx = Tensor::zeros(&[3], Dtype::F32)?;
        crusades_sdk::ops::EMBEDDING.call1(&[(&weight).into(), (&idx).into()])?;
        Ok(())
    }
}
crusades_sdk::export!(WrongDtype);

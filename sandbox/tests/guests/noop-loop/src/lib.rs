//! The host-call benchmark: N calls of the empty op on a tensor handle, N from the first
//! parameter's element count (the host sizes the loop through the workload it hands in).
use crusades_sdk::{ops, Arg};
struct NoopLoop;
impl crusades_sdk::Submission for NoopLoop {
    fn run() -> crusades_sdk::Result<()> {
        let config = crusades_sdk::workload::config();
        let params = crusades_sdk::workload::parameters();
        let t = &params[0].1;
        let n = config.hparams.topk as u64 * 1000;
        for _ in 0..n {
            ops::NOOP.call0(&[Arg::from(t)])?;
        }
        Ok(())
    }
}
crusades_sdk::export!(NoopLoop);

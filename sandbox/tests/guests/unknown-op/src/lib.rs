//! Calls an op the registry does not have.
static FROBNICATE: crusades_sdk::Op = crusades_sdk::Op::new("frobnicate");
struct Unknown;
impl crusades_sdk::Submission for Unknown {
    fn run() -> crusades_sdk::Result<()> {
        FROBNICATE.call(&[])?;
        Ok(())
    }
}
crusades_sdk::export!(Unknown);

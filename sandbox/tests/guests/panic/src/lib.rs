//! Panics: a trap in the guest.
struct Panic;
impl crusades_sdk::Submission for Panic {
    fn run() -> crusades_sdk::Result<()> {
        let v: Vec<u32> = core::hint::black_box(Vec::new());
        if v.is_empty() {
            panic!("the guest gives up");
        }
        Ok(())
    }
}
crusades_sdk::export!(Panic);

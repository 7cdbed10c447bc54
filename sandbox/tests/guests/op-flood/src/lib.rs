//! Calls the empty op forever: the op cap must stop it.
struct Flood;
impl crusades_sdk::Submission for Flood {
    fn run() -> crusades_sdk::Result<()> {
        loop {
            crusades_sdk::noop()?;
        }
    }
}
crusades_sdk::export!(Flood);

//! Burns guest CPU forever without calling the host: fuel or the deadline must stop it.
struct Spin;
impl crusades_sdk::Submission for Spin {
    fn run() -> crusades_sdk::Result<()> {
        let mut x = 0u64;
        loop {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
crusades_sdk::export!(Spin);

//! Grows its own linear memory without bound.
struct Bomb;
impl crusades_sdk::Submission for Bomb {
    fn run() -> crusades_sdk::Result<()> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(core::hint::black_box(vec![1u8; 16 << 20]));
        }
    }
}
crusades_sdk::export!(Bomb);

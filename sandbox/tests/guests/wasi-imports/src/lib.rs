//! Imports a WASI clock, the filesystem and sockets: refused at load time, naming each import.
wit_bindgen::generate!({ world: "sneaky", path: "wit", generate_all });
struct Sneaky;
impl Guest for Sneaky {
    fn run() -> u64 {
        let t = wasi::clocks::monotonic_clock::now();
        let f = wasi::filesystem::preopens::count() as u64;
        let s = wasi::sockets::tcp::connect(80) as u64;
        t + f + s
    }
}
export!(Sneaky);

//! Exports `hello` but not the contract's `run`.
wit_bindgen::generate!({ world: "quiet", path: "wit" });
struct Quiet;
impl Guest for Quiet {
    fn hello() -> u32 {
        7
    }
}
export!(Quiet);

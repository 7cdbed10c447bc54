//! Exports a `run` of the wrong type.
wit_bindgen::generate!({ world: "thing", path: "wit" });
struct Thing;
impl Guest for Thing {
    fn run(n: u32) -> u32 {
        n + 1
    }
}
export!(Thing);

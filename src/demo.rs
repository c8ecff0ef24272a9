//! `certex demo`: the whole story in one process (placeholder filled below).

pub async fn run() -> Result<(), String> {
    Err("demo not written yet".into())
}

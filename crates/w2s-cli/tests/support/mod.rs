pub mod bad_bodies;
pub mod eval;
pub mod hostile;
pub mod server;
pub mod vllm;

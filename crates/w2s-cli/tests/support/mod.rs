pub mod bad_bodies;
pub mod server;
pub mod vllm;

#![allow(dead_code)]
pub mod llama_server;
pub mod proxy;
pub mod server;
pub mod stub;

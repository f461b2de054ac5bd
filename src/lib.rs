//! wick: a local OpenAI-compatible server for open chat models.
//!
//! A request flows one way: `api` → `template` → `tokenizer` → `engine` (which owns the
//! `model`) → detokenizer → `api`. `catalog` turns model ids into files on disk.

pub mod api;
pub mod bench;
pub mod catalog;
pub mod chat;
pub mod config;
pub mod device;
pub mod engine;
pub mod faults;
pub mod metrics;
pub mod model;
pub mod reasoning;
pub mod routing;
pub mod safety;
pub mod server;
pub mod service;
pub mod synth;
pub mod template;
pub mod tokenizer;
pub mod tools;
pub mod upstream;

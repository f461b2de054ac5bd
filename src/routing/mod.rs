//! The V2 routing contract (shared/ROUTING.md): which routing mechanism a request uses,
//! the tier its query needs, which catalog model serves it, and the tradition layer
//! added to its system prompt. Plain functions: no HTTP, no model.

pub mod analyser;

//! candle building blocks shared by the model crates, below all of them:
//! - [`sparse`]: sparse × dense products with gradients as candle custom ops (`spmm`, `spmm_weighted`,
//!   `edge_dot`), the kernels the graph recommenders propagate with;
//! - [`graph`]: the user–item graphs they run on (bipartite adjacency, symmetric normalisation, GRCN's
//!   bidirectional edges) and LightGCN's layer mean;
//! - [`optim`]: the optimisers of the reference codes (PyTorch-faithful Adam and AdamW with checkpointable
//!   state) and their learning-rate schedules, used by the recommenders and by the teachers.

pub mod error;
pub mod graph;
pub mod optim;
pub mod sparse;

pub use error::{Error, Result};

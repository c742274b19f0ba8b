//! The id-only collaborative-filtering models of the SGFD paper's comparison (NeuMF, CML, NGCF, DGCF), BPR
//! matrix factorisation (optionally with item features) and popularity, the floor every model must beat.

pub mod cml;
pub mod dgcf;
pub mod mf;
pub mod neumf;
pub mod ngcf;
pub mod pop;

//! Sequential recommendation (KDSR's side): the encoders (MMSR as the KDSR code runs it, SASRec, GRU4Rec) and
//! their shared blocks ([`nn`]: layer norm, attention, GRU, modality gate), the [`model::SeqEncoder`] seam,
//! the recommender around an encoder with its next-item evaluation ([`recommender`]), and KDSR as an
//! auxiliary objective ([`kdsr`]).

pub mod gru4rec;
pub mod kdsr;
pub mod mmsr;
pub mod model;
pub mod nn;
pub mod recommender;
pub mod sasrec;

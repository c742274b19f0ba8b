//! KDSR plugged into a sequential recommender (spec `kdsr-mmsr.md` §4, §7): the frozen correlation teacher
//! ([`mmkd_teacher::kdsr::KdsrTeacher`]) gives scores and codes for every pair of a sequence's distinct items;
//! the student heads ([`mmkd_student_kd::kdsr::KdsrStudent`]) read the trainable modality tables and are
//! supervised by them; the modality tables learn at the asynchronous rate of [`AtConfig`].
//!
//! [`AtConfig`]: mmkd_student_kd::kdsr::AtConfig

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use mmkd_student_kd::kdsr::{KdsrConfig, KdsrStudent};
use mmkd_teacher::kdsr::KdsrTeacher;

use crate::error::Result;
use crate::seq::model::{ItemTables, SeqBatch};
use crate::seq::recommender::SeqAux;

/// KDSR's correlation distillation as a [`SeqAux`].
#[derive(Debug)]
pub struct KdsrAux {
    teacher: KdsrTeacher,
    student: KdsrStudent,
    cfg: KdsrConfig,
}

impl KdsrAux {
    /// Fits the teacher's codebooks on the frozen compressed features `z_v`, `z_t` (`(n_items + 1, d)`, row 0
    /// zero) and builds the student heads under `vb`.
    pub fn new(
        vb: VarBuilder,
        cfg: &KdsrConfig,
        z_v: &Tensor,
        z_t: &Tensor,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let d = z_v.dim(1)?;
        let started = std::time::Instant::now();
        let teacher = KdsrTeacher::fit(z_v, z_t, &cfg.codebook_config(), seed, device)?;
        tracing::info!(
            secs = started.elapsed().as_secs_f64(),
            codes = cfg.n_codes,
            sub_vectors = cfg.n_sub,
            "KDSR codebooks fitted"
        );
        let student = KdsrStudent::new(vb, cfg, d)?;
        Ok(Self { teacher, student, cfg: cfg.clone() })
    }

    /// The frozen teacher.
    pub fn teacher(&self) -> &KdsrTeacher {
        &self.teacher
    }
}

impl SeqAux for KdsrAux {
    fn losses(&self, batch: &SeqBatch, tables: &ItemTables) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let targets = self.teacher.targets(&batch.nodes)?;
        let e_v = ItemTables::gather(&tables.visual, &batch.nodes)?; // (b, q, d)
        let e_t = ItemTables::gather(&tables.text, &batch.nodes)?; // (b, q, d)
        let l = self.student.losses(&e_v, &e_t, &batch.node_mask, &targets)?;
        let mut logged = Vec::new();
        for (name, t) in [("hol_v", l.hol_v), ("dis_v", l.dis_v), ("hol_t", l.hol_t), ("dis_t", l.dis_t)] {
            if let Some(t) = t {
                logged.push((name.to_string(), t));
            }
        }
        Ok((l.total, logged))
    }

    fn modality_lr_factor(&self, epoch: usize) -> f64 {
        self.cfg.at.lr_factor(epoch)
    }
}

//! Seeded parameter initialisation. candle's CPU random generator cannot be seeded, so every new variable
//! is drawn on the host from a ChaCha stream keyed by (run seed, full parameter name), honouring candle's
//! [`Init`] hint, then moved to the device. Adding a parameter never changes another one's values.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// A [`VarBuilder`] that creates missing variables in `varmap`, drawing their values from ChaCha8 seeded by
/// `derive_seed(seed, name)`; variables already in the map (e.g. loaded from a checkpoint) are returned as is.
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(SeededVarMap { varmap: varmap.clone(), seed }), dtype, device.clone())
}

struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

/// The values `init` gives a tensor of `shape`, drawn from the stream of `name`.
pub fn seeded_values(seed: u64, name: &str, shape: &Shape, init: Init) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = mmkd_data::stream(seed, name);
    let mut uniform = |lo: f64, up: f64| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..up) as f32).collect() };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } if up > lo => uniform(lo, up),
        Init::Uniform { lo, .. } => vec![lo as f32; n],
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (mean + stdev * z) as f32
            })
            .collect(),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(-bound, bound)
                }
                candle_nn::init::NormalOrUniform::Normal => (0..n)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        (std * z) as f32
                    })
                    .collect(),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("poisoned VarMap lock".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch for {name}: expected {s:?}, the map holds {:?}", var.shape());
            }
            return Ok(var.as_tensor().clone());
        }
        let values = seeded_values(self.seed, name, &s, h);
        let tensor = Tensor::from_vec(values, s, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_owned(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("poisoned VarMap lock".into()))?;
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("variable {name} does not exist and has no shape to create it with"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().map(|d| d.contains_key(name)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_other_name_other_values() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let a = vb.pp("a").get_with_hints((3, 4), "weight", Init::Randn { mean: 0.0, stdev: 1.0 }).unwrap();
            let b = vb.pp("b").get_with_hints((3, 4), "weight", Init::Randn { mean: 0.0, stdev: 1.0 }).unwrap();
            (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vm)
        };
        let (a1, b1, vm) = make(7);
        let (a2, b2, _) = make(7);
        let (a3, _, _) = make(8);
        assert_eq!(a1, a2);
        assert_eq!(b1, b2);
        assert_ne!(a1, b1);
        assert_ne!(a1, a3);
        assert_eq!(vm.all_vars().len(), 2);
        // Re-asking returns the stored variable, not a new draw.
        let vb = seeded_var_builder(&vm, 99, DType::F32, &Device::Cpu);
        let again = vb.pp("a").get_with_hints((3, 4), "weight", Init::Const(5.0)).unwrap();
        assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a1);
        assert!(vb.pp("a").get_with_hints((4, 4), "weight", Init::Const(0.0)).is_err());
    }

    #[test]
    fn init_hints_are_honoured() {
        let s = Shape::from((200, 50));
        let u = seeded_values(1, "u", &s, Init::Uniform { lo: -0.5, up: 0.5 });
        assert!(u.iter().all(|v| (-0.5..0.5).contains(v)));
        let n = seeded_values(1, "n", &s, Init::Randn { mean: 2.0, stdev: 3.0 });
        let mean = n.iter().map(|v| f64::from(*v)).sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!((mean - 2.0).abs() < 0.1 && (var.sqrt() - 3.0).abs() < 0.1, "{mean} {var}");
        assert_eq!(seeded_values(1, "c", &s, Init::Const(0.25))[17], 0.25);
        let k = seeded_values(1, "k", &s, candle_nn::init::DEFAULT_KAIMING_UNIFORM);
        // fan_in = 50, ReLU gain √2: bound = √3·√2/√50 ≈ 0.3464.
        assert!(k.iter().all(|v| v.abs() <= 0.3465) && k.iter().any(|v| v.abs() > 0.33));
    }
}

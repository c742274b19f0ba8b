//! The files of a run folder and how they are written: the best weights, the resumable checkpoint, the
//! metrics log and the JSON results.
//!
//! # The checkpoint is one atomic unit
//! After every epoch the trainer writes [`CHECKPOINT_FILE`]: the model's variables (keys `model/<name>`),
//! the optimisers' state (`optim/<key>`) and the trainer's state as JSON in the safetensors metadata
//! (key `state`), in one file written under a temporary name and renamed into place. A kill at any moment
//! leaves either the previous epoch's checkpoint or this one, never a mixture; a resume never refuses a
//! checkpoint for being torn. Temporary files a killed write left behind are removed when a run starts
//! ([`remove_stale_temporaries`]).
//!
//! `metrics.jsonl` is appended *before* the checkpoint is committed, and a resume trims it to the committed
//! epoch ([`trim_metrics`]), so a kill between the two loses nothing and duplicates nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use mmkd_nn::optim::sorted_named_vars;

/// Model variables at the best evaluation (plain variable names, loadable with `VarMap::load`).
pub const BEST_FILE: &str = "best.safetensors";
/// The resumable state after the last finished epoch: weights, optimiser state and trainer state.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// One JSON line per epoch.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The run's outcome.
pub const RESULT_FILE: &str = "result.json";
/// The test evaluation with per-user vectors.
pub const TEST_PER_USER_FILE: &str = "test_per_user.json";

const MODEL_PREFIX: &str = "model/";
const OPTIM_PREFIX: &str = "optim/";
const STATE_KEY: &str = "state";
/// Suffix of every temporary file this module writes.
const TMP_SUFFIX: &str = ".tmp";

/// What a checkpoint holds: the model's variables, the optimiser state and the trainer's state `S`.
#[derive(Debug)]
pub struct Restored<S> {
    pub model: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub state: S,
}

/// Writes the checkpoint of `vars`, `optimizer` (state tensors by name) and `state` into `dir` atomically.
pub fn save_checkpoint<S: Serialize>(
    dir: &Path,
    vars: &VarMap,
    optimizer: Vec<(String, Tensor)>,
    state: &S,
) -> Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, var) in sorted_named_vars(vars) {
        tensors.push((format!("{MODEL_PREFIX}{name}"), var.as_tensor().detach().to_device(&Device::Cpu)?));
    }
    for (name, t) in optimizer {
        tensors.push((format!("{OPTIM_PREFIX}{name}"), t.to_device(&Device::Cpu)?));
    }
    let state =
        serde_json::to_string(state).map_err(|e| Error::Checkpoint { path: path.clone(), message: e.to_string() })?;
    let metadata = HashMap::from([(STATE_KEY.to_string(), state)]);
    let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| Error::Checkpoint { path: path.clone(), message: e.to_string() })?;
    write_file(&path, &bytes)
}

/// Reads the checkpoint in `dir` onto `device` (set the model from it with [`assign_vars`]).
pub fn load_checkpoint<S: for<'de> Deserialize<'de>>(dir: &Path, device: &Device) -> Result<Restored<S>> {
    let path = dir.join(CHECKPOINT_FILE);
    let bad = |message: String| Error::Checkpoint { path: path.clone(), message };
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let state_text = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| bad("no trainer state in the metadata".into()))?;
    let state: S = serde_json::from_str(state_text).map_err(|e| bad(format!("trainer state: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| bad(e.to_string()))?;
    let mut model = HashMap::new();
    let mut optimizer = HashMap::new();
    for (key, t) in tensors {
        if let Some(name) = key.strip_prefix(MODEL_PREFIX) {
            model.insert(name.to_string(), t);
        } else if let Some(name) = key.strip_prefix(OPTIM_PREFIX) {
            optimizer.insert(name.to_string(), t);
        } else {
            return Err(bad(format!("unexpected tensor `{key}`")));
        }
    }
    Ok(Restored { model, optimizer, state })
}

/// The trainer state of the checkpoint in `dir`, read from its header only (cheap: no tensor is read);
/// `None` when there is no checkpoint.
pub fn read_checkpoint_state<S: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Option<S>> {
    use std::io::Read;
    let path = dir.join(CHECKPOINT_FILE);
    let bad = |message: String| Error::Checkpoint { path: path.clone(), message };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: path.clone(), source }),
    };
    let file_len = file.metadata().map_err(|source| Error::Io { path: path.clone(), source })?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(len);
    if n.saturating_add(8) > file_len {
        return Err(bad(format!("header of {n} bytes in a file of {file_len}")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|source| Error::Io { path: path.clone(), source })?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let state =
        header["__metadata__"][STATE_KEY].as_str().ok_or_else(|| bad("no trainer state in the metadata".into()))?;
    serde_json::from_str(state).map(Some).map_err(|e| bad(format!("trainer state: {e}")))
}

/// Saves the variables of `vars` by name into `path`, atomically.
pub fn save_vars(vars: &VarMap, path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> =
        sorted_named_vars(vars).into_iter().map(|(name, var)| (name, var.as_tensor().detach())).collect();
    let bytes = safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), None)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    write_file(path, &bytes)
}

/// Sets every variable of `vars` from the file at `path`, which must hold exactly those names with the
/// same shapes and dtypes; nothing changes on error.
pub fn load_vars(vars: &VarMap, path: &Path, device: &Device) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    assign_vars(vars, tensors, path)
}

/// Sets every variable of `vars` from `tensors` (read from `path`, named in errors), which must hold exactly
/// those names with the same shapes and dtypes; nothing changes on error.
pub fn assign_vars(vars: &VarMap, mut tensors: HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let bad = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
    let named = sorted_named_vars(vars);
    let mut values = Vec::with_capacity(named.len());
    for (name, var) in &named {
        let t = tensors.remove(name).ok_or_else(|| bad(format!("no tensor `{name}` for the model's variable")))?;
        if t.dims() != var.dims() || t.dtype() != var.dtype() {
            return Err(bad(format!(
                "`{name}` is {:?} {:?}, the model's variable {:?} {:?}",
                t.dims(),
                t.dtype(),
                var.dims(),
                var.dtype()
            )));
        }
        values.push(t);
    }
    let mut extra: Vec<&String> = tensors.keys().collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(bad(format!("tensor `{name}` is not a variable of the model")));
    }
    for ((_, var), t) in named.iter().zip(values) {
        var.set(&t)?;
    }
    Ok(())
}

/// Removes the temporary files (`*.tmp`) that a killed write left in `dir`.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: dir.to_path_buf(), source }),
    };
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?.path();
        let is_tmp = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(TMP_SUFFIX));
        if is_tmp && path.is_file() {
            tracing::info!(file = %path.display(), "removing a temporary file an interrupted write left");
            std::fs::remove_file(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        }
    }
    Ok(())
}

/// Keeps the lines of `metrics.jsonl` whose `epoch` is at most `epochs_done`.
pub fn trim_metrics(path: &Path, epochs_done: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let mut kept = String::with_capacity(text.len());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let epoch = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64));
        // A torn last line (no parsable epoch) is dropped with the lines after the checkpoint.
        if epoch.is_some_and(|e| e as usize <= epochs_done) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_file(path, kept.as_bytes())
}

/// Appends `value` as one line to `path`.
pub fn append_line(path: &Path, value: &serde_json::Value) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    let mut line = value.to_string();
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)
}

/// `bytes` into `path`, atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    mmkd_features::write_atomically(path, |w| w.write_all(bytes)).map_err(|e| match e {
        mmkd_features::Error::Io { path, source } => Error::Io { path, source },
        other => other.into(),
    })
}

/// `value` as pretty JSON into `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

/// Reads the JSON file at `path`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })
}

/// `path` with `.tmp` appended (the temporary name of an atomic write).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    PathBuf::from(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_committed_epochs() {
        let dir = std::env::temp_dir().join(format!("mmkd-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(METRICS_FILE);
        std::fs::write(&path, "{\"epoch\":1}\n{\"epoch\":2}\n{\"epoch\":3}\n{\"epo").unwrap();
        trim_metrics(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"epoch\":1}\n{\"epoch\":2}\n");
        std::fs::write(dir.join("checkpoint.safetensors.tmpAB12"), b"torn").unwrap();
        remove_stale_temporaries(&dir).unwrap();
        assert!(!dir.join("checkpoint.safetensors.tmpAB12").exists());
        assert!(path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn checkpoint_round_trip_restores_weights_and_state() {
        let dir = std::env::temp_dir().join(format!("mmkd-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vars = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
        let w = vb.get_with_hints((2, 3), "w", candle_nn::Init::Const(1.5)).unwrap();
        let opt = vec![("0.exp_avg".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())];
        save_checkpoint(&dir, &vars, opt, &serde_json::json!({"epochs_done": 4})).unwrap();
        vars.data().lock().unwrap()["w"].set(&w.zeros_like().unwrap()).unwrap();
        let r: Restored<serde_json::Value> = load_checkpoint(&dir, &Device::Cpu).unwrap();
        assign_vars(&vars, r.model, &dir.join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(r.state["epochs_done"], 4);
        let header: serde_json::Value = read_checkpoint_state(&dir).unwrap().unwrap();
        assert_eq!(header, r.state);
        assert_eq!(r.optimizer["0.exp_avg"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        let restored = vars.data().lock().unwrap()["w"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(restored, vec![1.5; 6]);
        // A truncated file is an error naming it, and changes nothing.
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_checkpoint::<serde_json::Value>(&dir, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains(CHECKPOINT_FILE), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

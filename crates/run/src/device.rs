//! `--device cpu|cuda[:N]`.

use candle_core::Device;

use crate::error::{bail, Context, Error, Result};

/// Parses a device name; `cuda` needs a build with `--features cuda`.
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let ordinal = match name.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| Error::Invalid(format!("device `{name}`: expected cuda:N with N an integer")))?,
                None => 0,
            };
            if !cfg!(feature = "cuda") {
                bail!("device `{name}` needs a build with the `cuda` feature: use `cargo xtask-cuda …` instead of `cargo xtask …`");
            }
            Device::new_cuda(ordinal).with_context(|| format!("opening CUDA device {ordinal}"))
        }
        _ => bail!("unknown device `{name}`: expected `cpu`, `cuda` or `cuda:N`"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_names() {
        assert!(super::parse("cpu").unwrap().is_cpu());
        assert!(super::parse("tpu").unwrap_err().to_string().contains("expected `cpu`"));
        assert!(super::parse("cuda:x").is_err());
    }
}

"""PyTorch implementations of the per-step math of our Rust backbones (timing comparators; see README)."""

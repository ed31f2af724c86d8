//! Loading what modifies a loaded model, as diffusers' `loaders` package:
//! LoRA adapters.

pub mod lora_pipeline;

//! The diffusers configs (UNet, VAE, scheduler) and OSCAR's level table, as stored in
//! the model file's metadata. Models are built from these, never from fixed sizes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A diffusers field that is either one value for every block or one per block.
fn per_block(value: &Value, blocks: usize, field: &str) -> Result<Vec<usize>> {
    match value {
        Value::Number(n) => {
            let n = n.as_u64().ok_or_else(|| bad(field))?;
            Ok(vec![n as usize; blocks])
        }
        Value::Array(items) if items.len() == blocks => items
            .iter()
            .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| bad(field)))
            .collect(),
        _ => Err(bad(field)),
    }
}

/// Most down blocks a UNet or VAE may have: each halves the picture, and 2^(blocks − 1)
/// must stay a sane pixel count (SD-2.1 has 4).
const MAX_BLOCKS: usize = 16;

fn bad(field: &str) -> Error {
    Error::BadModel(format!("config field '{field}' is missing or malformed"))
}

/// A config number that must be finite and above 0 (an epsilon, a scale): anything else
/// decodes every picture to NaNs.
fn positive(value: f32, field: &str) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::BadModel(format!(
            "config field '{field}' is {value}; it must be a number above 0"
        )))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    pub use_linear_projection: bool,
    /// Head counts per down block: SD-2.1 stores them under `attention_head_dim`,
    /// which diffusers reads as `num_attention_heads` when that field is null.
    #[serde(skip)]
    pub heads: Vec<usize>,
    pub attention_head_dim: Value,
    #[serde(default)]
    pub num_attention_heads: Value,
    #[serde(default = "one")]
    pub transformer_layers_per_block: Value,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub class_embed_type: Value,
    #[serde(default)]
    pub addition_embed_type: Value,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    pub only_cross_attention: Value,
    #[serde(default)]
    pub mid_block_type: Option<String>,
    #[serde(default)]
    pub dual_cross_attention: Option<bool>,
    #[serde(skip)]
    pub transformer_layers: Vec<usize>,
}

fn one() -> Value {
    Value::from(1)
}

fn three() -> usize {
    3
}

impl UnetConfig {
    pub fn parse(json: &str) -> Result<UnetConfig> {
        let mut c: UnetConfig =
            serde_json::from_str(json).map_err(|e| Error::BadModel(format!("unet config: {e}")))?;
        let blocks = c.block_out_channels.len();
        if !(1..=MAX_BLOCKS).contains(&blocks) {
            return Err(bad("block_out_channels"));
        }
        positive(c.norm_eps, "norm_eps")?;
        let heads_field = if c.num_attention_heads.is_null() {
            &c.attention_head_dim
        } else {
            &c.num_attention_heads
        };
        c.heads = per_block(heads_field, blocks, "attention_head_dim")?;
        c.transformer_layers = per_block(
            &c.transformer_layers_per_block,
            blocks,
            "transformer_layers_per_block",
        )?;
        let unsupported = [
            (!c.class_embed_type.is_null(), "class_embed_type"),
            (!c.addition_embed_type.is_null(), "addition_embed_type"),
            (
                c.resnet_time_scale_shift
                    .as_deref()
                    .is_some_and(|s| s != "default"),
                "resnet_time_scale_shift",
            ),
            (
                c.only_cross_attention.as_bool() == Some(true),
                "only_cross_attention",
            ),
            (c.dual_cross_attention == Some(true), "dual_cross_attention"),
            (
                c.mid_block_type
                    .as_deref()
                    .is_some_and(|t| t != "UNetMidBlock2DCrossAttn"),
                "mid_block_type",
            ),
            (
                c.down_block_types.len() != blocks || c.up_block_types.len() != blocks,
                "block type lists",
            ),
            (
                c.heads
                    .iter()
                    .zip(&c.block_out_channels)
                    .any(|(&h, &ch)| h == 0 || ch % h != 0),
                "head counts",
            ),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(bad, _)| *bad) {
            return Err(Error::BadModel(format!(
                "unet config: unsupported '{field}' (OSCAR uses the SD-2.1 UNet)"
            )));
        }
        Ok(c)
    }

    /// Latent pixels per pixel of the deepest block: each down block but the last halves.
    pub fn multiple(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn yes() -> bool {
    true
}

impl VaeConfig {
    pub fn parse(json: &str) -> Result<VaeConfig> {
        let c: VaeConfig =
            serde_json::from_str(json).map_err(|e| Error::BadModel(format!("vae config: {e}")))?;
        if !(1..=MAX_BLOCKS).contains(&c.block_out_channels.len()) {
            return Err(bad("block_out_channels"));
        }
        positive(c.scaling_factor, "scaling_factor")?;
        Ok(c)
    }

    /// Image pixels per latent pixel along each axis.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SchedulerConfig {
    pub beta_start: f32,
    pub beta_end: f32,
    pub beta_schedule: String,
    pub num_train_timesteps: usize,
    #[serde(default = "epsilon")]
    pub prediction_type: String,
}

fn epsilon() -> String {
    "epsilon".into()
}

impl SchedulerConfig {
    pub fn parse(json: &str) -> Result<SchedulerConfig> {
        let c: SchedulerConfig = serde_json::from_str(json)
            .map_err(|e| Error::BadModel(format!("scheduler config: {e}")))?;
        if c.prediction_type != "v_prediction"
            || !matches!(c.beta_schedule.as_str(), "scaled_linear" | "linear")
        {
            return Err(Error::BadModel(format!(
                "scheduler: OSCAR needs v_prediction with a (scaled_)linear schedule, got {} / {}",
                c.prediction_type, c.beta_schedule
            )));
        }
        // Betas outside (0, 1) make ᾱ_t negative or 0, whose square roots are NaN.
        let betas = 0.0 < c.beta_start && c.beta_start <= c.beta_end && c.beta_end < 1.0;
        if !betas || c.num_train_timesteps < 2 {
            return Err(Error::BadModel(format!(
                "scheduler: betas {} to {} over {} steps; OSCAR needs 0 < beta_start ≤ \
                 beta_end < 1 and at least 2 steps",
                c.beta_start, c.beta_end, c.num_train_timesteps
            )));
        }
        Ok(c)
    }

    /// ᾱ_t, accumulated in f32 exactly as diffusers does (betas from an f32 linspace).
    pub fn alpha_bar(&self, t: usize) -> Result<f32> {
        let n = self.num_train_timesteps;
        if t >= n {
            return Err(Error::BadModel(format!(
                "timestep {t} is outside the schedule's {n} steps"
            )));
        }
        let (start, end) = match self.beta_schedule.as_str() {
            "scaled_linear" => (self.beta_start.sqrt(), self.beta_end.sqrt()),
            _ => (self.beta_start, self.beta_end),
        };
        let step = (end - start) / (n - 1) as f32;
        let mut product = 1f32;
        for i in 0..=t {
            // torch.linspace fills the second half from the end, so the last value is exact.
            let b = if i < n / 2 {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            };
            let beta = if self.beta_schedule == "scaled_linear" {
                b * b
            } else {
                b
            };
            product *= 1.0 - beta;
        }
        Ok(product)
    }
}

/// One of OSCAR's bit-rate levels.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Level {
    pub level: usize,
    /// Token grid downsampling relative to the latent (8, 4, 2, 2, 1, 1, 1, 1).
    pub stride: usize,
    pub codebook_size: usize,
    pub codebook_dim: usize,
    pub timestep: usize,
    pub bpp_nominal: f64,
}

pub fn parse_levels(json: &str) -> Result<Vec<Level>> {
    let levels: Vec<Level> =
        serde_json::from_str(json).map_err(|e| Error::BadModel(format!("levels: {e}")))?;
    let valid = !levels.is_empty()
        && levels
            .iter()
            .enumerate()
            .all(|(i, l)| l.level == i && l.stride.is_power_of_two() && l.codebook_size >= 2);
    if !valid {
        return Err(Error::BadModel(
            "levels: must be numbered 0.. with power-of-two strides and codebooks of 2 or more"
                .into(),
        ));
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNET: &str = r#"{"in_channels":4,"out_channels":4,"block_out_channels":[32,64],
        "layers_per_block":1,"down_block_types":["CrossAttnDownBlock2D","DownBlock2D"],
        "up_block_types":["UpBlock2D","CrossAttnUpBlock2D"],"cross_attention_dim":32,
        "norm_num_groups":8,"norm_eps":1e-5,"flip_sin_to_cos":true,"freq_shift":0,
        "use_linear_projection":true,"attention_head_dim":[1,2]}"#;

    fn unet_with(field: &str, value: &str) -> Result<UnetConfig> {
        let mut json: serde_json::Map<String, Value> = serde_json::from_str(UNET).unwrap();
        json.insert(field.into(), serde_json::from_str(value).unwrap());
        UnetConfig::parse(&Value::Object(json).to_string())
    }

    #[test]
    fn per_block_fields_take_one_value_or_one_per_block() {
        let c = UnetConfig::parse(UNET).unwrap();
        assert_eq!((c.heads, c.transformer_layers), (vec![1, 2], vec![1, 1]));
        let c = unet_with("transformer_layers_per_block", "[1, 2]").unwrap();
        assert_eq!(c.transformer_layers, vec![1, 2]);
        assert_eq!(c.multiple(), 2);
    }

    #[test]
    fn malformed_unet_configs_are_errors() {
        // A scalar that is not a count once built a UNet without transformers.
        for (field, value, named) in [
            (
                "transformer_layers_per_block",
                "1.5",
                "transformer_layers_per_block",
            ),
            (
                "transformer_layers_per_block",
                "-1",
                "transformer_layers_per_block",
            ),
            (
                "transformer_layers_per_block",
                "[1]",
                "transformer_layers_per_block",
            ),
            ("attention_head_dim", "\"8\"", "attention_head_dim"),
            ("block_out_channels", "[]", "block_out_channels"),
            ("attention_head_dim", "[1, 3]", "head counts"),
        ] {
            let message = unet_with(field, value).unwrap_err().to_string();
            assert!(message.contains(named), "{field} = {value}: {message}");
        }
        // Too deep to halve: 2^(blocks − 1) would overflow.
        let deep = [32; MAX_BLOCKS + 1];
        let mut json: serde_json::Map<String, Value> = serde_json::from_str(UNET).unwrap();
        json.insert("block_out_channels".into(), deep.to_vec().into());
        json.insert("attention_head_dim".into(), 1.into());
        let types = Value::from(vec!["DownBlock2D"; deep.len()]);
        json.insert("down_block_types".into(), types.clone());
        json.insert("up_block_types".into(), types);
        let message = UnetConfig::parse(&Value::Object(json).to_string())
            .unwrap_err()
            .to_string();
        assert!(message.contains("block_out_channels"), "{message}");
    }

    /// Numbers that would make every picture NaN are refused when the model loads.
    #[test]
    fn numbers_that_break_the_arithmetic_are_errors() {
        for eps in ["0", "-1e-5"] {
            let message = unet_with("norm_eps", eps).unwrap_err().to_string();
            assert!(message.contains("'norm_eps' is"), "{eps}: {message}");
        }
        let vae = r#"{"in_channels":3,"out_channels":3,"block_out_channels":[32],
            "layers_per_block":1,"latent_channels":4,"norm_num_groups":8,"scaling_factor":S}"#;
        for scale in ["0", "-0.18"] {
            let message = VaeConfig::parse(&vae.replace('S', scale))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("'scaling_factor' is"),
                "{scale}: {message}"
            );
        }
        assert!(VaeConfig::parse(&vae.replace('S', "1e-30")).is_ok());
        let scheduler = |start: &str, end: &str, steps: usize| {
            SchedulerConfig::parse(&format!(
                r#"{{"beta_start":{start},"beta_end":{end},"beta_schedule":"scaled_linear",
                "num_train_timesteps":{steps},"prediction_type":"v_prediction"}}"#
            ))
        };
        assert!(scheduler("0.00085", "0.012", 1000).is_ok());
        assert!(scheduler("0.5", "0.5", 2).is_ok());
        for (start, end, steps) in [
            ("0", "0.012", 1000),
            ("0.00085", "1", 1000),
            ("0.02", "0.01", 1000),
            ("-0.1", "0.012", 1000),
            ("0.00085", "0.012", 1),
        ] {
            let message = scheduler(start, end, steps).unwrap_err().to_string();
            assert!(message.contains("OSCAR needs 0 < beta_start"), "{message}");
        }
    }

    #[test]
    fn a_vae_without_blocks_is_an_error() {
        let vae = r#"{"in_channels":3,"out_channels":3,"block_out_channels":[],
            "layers_per_block":1,"latent_channels":4,"norm_num_groups":8,"scaling_factor":0.18}"#;
        assert!(VaeConfig::parse(vae).is_err());
        let ok = vae.replace("[]", "[32,64]");
        assert_eq!(VaeConfig::parse(&ok).unwrap().downscale(), 2);
    }

    #[test]
    fn levels_are_numbered_with_power_of_two_strides() {
        let level = |n: usize, stride: usize, codebook: usize| {
            format!(
                r#"{{"level":{n},"stride":{stride},"codebook_size":{codebook},"codebook_dim":4,"timestep":1,"bpp_nominal":0.1}}"#
            )
        };
        let list = |items: &[String]| format!("[{}]", items.join(","));
        assert!(parse_levels(&list(&[level(0, 8, 16), level(1, 4, 16)])).is_ok());
        for bad in [
            list(&[]),
            list(&[level(1, 8, 16)]),
            list(&[level(0, 3, 16)]),
            list(&[level(0, 8, 1)]),
        ] {
            assert!(parse_levels(&bad).is_err(), "{bad}");
        }
    }
}

//! SDXL U-Net module names in the original SGM (generative-models) naming,
//! which kohya's SDXL trainer writes, mapped to diffusers' names, which the
//! ONNX export's node names carry.
//!
//! SGM numbers the U-Net's blocks flat: `input_blocks.0` is `conv_in`, then
//! each down level has `layers_per_block` blocks of (resnet `.0`, attention
//! `.1`) and, except the last, one downsampler block (`.0.op`);
//! `middle_block.{0,1,2}` is resnet, attention, resnet; each up level has
//! `layers_per_block + 1` blocks of (resnet `.0`, attention `.1`, upsampler
//! `.2`; `.1` is the upsampler when the level has no attention). Inside a
//! resnet `in_layers.2`, `out_layers.3`, `emb_layers.1` and `skip_connection`
//! are `conv1`, `conv2`, `time_emb_proj` and `conv_shortcut`. The mapping
//! agrees with diffusers' `_maybe_map_sgm_blocks_to_diffusers` and
//! `_convert_unet_lora_key` (checked by tools/make_sdxl_lora_fixture.py,
//! whose SGM-named file fuses to the same weights as its diffusers-named one).

/// `input_blocks_4_1_transformer_blocks_0_attn1_to_q` (`_` spelling) →
/// `down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`, for a U-Net
/// with `layers_per_block`; `None` when `key` is not in SGM naming.
pub fn to_diffusers(key: &str, layers_per_block: usize) -> Option<String> {
    let per = layers_per_block + 1;
    for (sgm, diffusers) in [
        ("time_embed_0", "time_embedding_linear_1"),
        ("time_embed_2", "time_embedding_linear_2"),
        ("label_emb_0_0", "add_embedding_linear_1"),
        ("label_emb_0_2", "add_embedding_linear_2"),
        ("out_2", "conv_out"),
        ("input_blocks_0_0", "conv_in"),
    ] {
        if key == sgm {
            return Some(diffusers.to_string());
        }
    }
    if let Some(rest) = key.strip_prefix("input_blocks_") {
        let (i, j, rest) = two_numbers(rest)?;
        let (level, layer) = ((i.checked_sub(1)?) / per, (i - 1) % per);
        if layer == layers_per_block {
            return (j == 0 && rest == "op").then(|| format!("down_blocks_{level}_downsamplers_0_conv"));
        }
        return inner(&format!("down_blocks_{level}"), layer, j, rest, false);
    }
    if let Some(rest) = key.strip_prefix("middle_block_") {
        let (i, rest) = one_number(rest)?;
        return match i {
            0 => Some(format!("mid_block_resnets_0_{}", resnet_part(rest))),
            1 => Some(format!("mid_block_attentions_0_{rest}")),
            2 => Some(format!("mid_block_resnets_1_{}", resnet_part(rest))),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("output_blocks_") {
        let (i, j, rest) = two_numbers(rest)?;
        return inner(&format!("up_blocks_{}", i / per), i % per, j, rest, true);
    }
    None
}

/// Block `j` (resnet, attention, upsampler) of a level's `layer`.
fn inner(level: &str, layer: usize, j: usize, rest: &str, up: bool) -> Option<String> {
    match j {
        0 => Some(format!("{level}_resnets_{layer}_{}", resnet_part(rest))),
        // A level without attention has its upsampler at `.1`: a bare `conv`.
        1 if up && rest == "conv" => Some(format!("{level}_upsamplers_0_conv")),
        1 => Some(format!("{level}_attentions_{layer}_{rest}")),
        2 if up => Some(format!("{level}_upsamplers_0_{rest}")),
        _ => None,
    }
}

fn resnet_part(rest: &str) -> &str {
    match rest {
        "in_layers_2" => "conv1",
        "out_layers_3" => "conv2",
        "emb_layers_1" => "time_emb_proj",
        "skip_connection" => "conv_shortcut",
        other => other,
    }
}

/// `"3_rest"` → (3, "rest").
fn one_number(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('_')?;
    Some((n.parse().ok()?, rest))
}

/// `"4_1_rest"` → (4, 1, "rest").
fn two_numbers(s: &str) -> Option<(usize, usize, &str)> {
    let (i, rest) = one_number(s)?;
    let (j, rest) = one_number(rest)?;
    Some((i, j, rest))
}

#[cfg(test)]
mod tests {
    use super::to_diffusers;

    /// SDXL base (layers_per_block 2), names as kohya's SDXL LoRAs carry them.
    #[test]
    fn sdxl_base_names_map_as_diffusers_maps_them() {
        let cases = [
            ("input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"),
            ("input_blocks_8_1_proj_in", "down_blocks_2_attentions_1_proj_in"),
            ("input_blocks_1_0_in_layers_2", "down_blocks_0_resnets_0_conv1"),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            ("input_blocks_4_0_skip_connection", "down_blocks_1_resnets_0_conv_shortcut"),
            ("middle_block_1_transformer_blocks_9_ff_net_2", "mid_block_attentions_0_transformer_blocks_9_ff_net_2"),
            ("middle_block_2_emb_layers_1", "mid_block_resnets_1_time_emb_proj"),
            ("output_blocks_0_1_transformer_blocks_3_attn2_to_k", "up_blocks_0_attentions_0_transformer_blocks_3_attn2_to_k"),
            ("output_blocks_5_1_proj_out", "up_blocks_1_attentions_2_proj_out"),
            ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
            ("output_blocks_8_0_out_layers_3", "up_blocks_2_resnets_2_conv2"),
            ("input_blocks_0_0", "conv_in"),
            ("label_emb_0_2", "add_embedding_linear_2"),
        ];
        for (sgm, want) in cases {
            assert_eq!(to_diffusers(sgm, 2).as_deref(), Some(want), "{sgm}");
        }
        assert_eq!(to_diffusers("down_blocks_1_attentions_0_proj_in", 2), None);
        assert_eq!(to_diffusers("input_blocks_x_1_proj_in", 2), None);
        assert_eq!(to_diffusers("middle_block_3_proj_in", 2), None);
    }
}
